//! Secret values (AccessKeySecret, STS token, OIDC token, DingTalk ClientSecret, AesKey).
//!
//! The type is [`secrecy::SecretString`], re-exported here with [`ExposeSecret`]: its `Debug`
//! prints `SecretBox<str>([REDACTED])`, it has no `Display`, no `PartialEq` and no `Serialize`
//! (so it can neither be printed nor land in a serialised object by accident), and it zeroizes
//! its buffer on drop. The value is only reachable through
//! [`expose_secret`](ExposeSecret::expose_secret).

pub use secrecy::{ExposeSecret, SecretString};

/// Equality of two optional secrets by value (`SecretString` has no `PartialEq` on purpose).
pub fn secret_eq(a: Option<&SecretString>, b: Option<&SecretString>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a.expose_secret() == b.expose_secret(),
        (None, None) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALUE: &str = "hunter2-very-secret";

    #[test]
    fn debug_redacts() {
        let s = SecretString::from(VALUE.to_string());
        for text in [
            format!("{s:?}"),
            format!("{s:#?}"),
            format!("{:#?}", Some(s.clone())),
            format!("{:?}", vec![s.clone()]),
        ] {
            assert!(!text.contains(VALUE), "{text}");
            assert!(text.contains("REDACTED"), "{text}");
        }
        assert_eq!(s.expose_secret(), VALUE);
        assert_eq!(SecretString::from(VALUE).expose_secret(), VALUE);
        assert!(SecretString::default().expose_secret().is_empty());
    }

    #[test]
    fn panic_messages_do_not_show_the_value() {
        let s = SecretString::from(VALUE);
        fn fail(r: Result<(), SecretString>) {
            r.expect("failed with")
        }
        let caught = std::panic::catch_unwind(|| fail(Err(s))).unwrap_err();
        let text = caught
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| caught.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap();
        assert!(text.starts_with("failed with"), "{text}");
        assert!(!text.contains(VALUE), "{text}");
    }

    #[test]
    fn equality_by_value() {
        let a = SecretString::from("x");
        assert!(secret_eq(Some(&a), Some(&SecretString::from("x"))));
        assert!(!secret_eq(Some(&a), Some(&SecretString::from("y"))));
        assert!(!secret_eq(Some(&a), None));
        assert!(secret_eq(None, None));
    }
}
