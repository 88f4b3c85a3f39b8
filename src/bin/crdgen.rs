//! Prints the ChatConfiguration CRD as YAML; `crds/` is generated with it.

fn main() {
    print!("{}", oos_chat_operator::crd::crd_yaml());
}
