//! The committed CRD YAML must be exactly what the Rust types generate.

#[test]
fn committed_crd_matches_the_rust_types() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/crds/chatconfigurations.oos.chatops.dev.yaml"
    );
    let committed = std::fs::read_to_string(path).expect("crds/ YAML is committed");
    let generated = oos_chat_operator::crd::crd_yaml();
    assert!(
        committed == generated,
        "crds/ is stale: run `cargo run --bin crdgen > crds/chatconfigurations.oos.chatops.dev.yaml`"
    );
}

#[test]
fn every_schema_field_has_a_description() {
    // `kubectl explain` shows these; an undocumented field is a bug.
    let crd: serde_json::Value = serde_yaml::from_str(&oos_chat_operator::crd::crd_yaml()).unwrap();
    let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
    fn walk(path: &str, node: &serde_json::Value, missing: &mut Vec<String>) {
        if let Some(props) = node.get("properties").and_then(|p| p.as_object()) {
            for (name, child) in props {
                let p = format!("{path}.{name}");
                if child.get("description").is_none() {
                    missing.push(p.clone());
                }
                walk(&p, child, missing);
                if let Some(items) = child.get("items") {
                    walk(&p, items, missing);
                }
                if let Some(ap) = child.get("additionalProperties") {
                    walk(&p, ap, missing);
                }
            }
        }
    }
    let mut missing = Vec::new();
    walk("", &schema["properties"]["spec"], &mut missing);
    walk(".status", &schema["properties"]["status"], &mut missing);
    assert!(
        missing.is_empty(),
        "fields without description: {missing:?}"
    );
}
