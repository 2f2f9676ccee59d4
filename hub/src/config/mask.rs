//! Hiding secrets in settings before they are shown (`hub config print`,
//! error messages).
//!
//! Two kinds of secret: a setting that is a secret as a whole (its key names a
//! password, secret, token or key), and the password inside a URL
//! (`postgres://hub:PASSWORD@host/db`, `mqtt://user:PASSWORD@broker`, or a
//! `password=` query parameter). Masking works on every value, so a new URL
//! setting is covered without being listed here.

/// What a hidden secret is shown as.
pub const MASK: &str = "****";

/// Whether the setting named `key` (snake_case) is a secret as a whole.
pub fn is_secret_key(key: &str) -> bool {
    key.split('_')
        .any(|word| matches!(word, "password" | "secret" | "token" | "key"))
}

/// `value` of setting `key` as it may be shown: a secret setting entirely
/// masked, a URL with its password masked, anything else unchanged.
pub fn mask_secrets(key: &str, value: &str) -> String {
    if is_secret_key(key) && !value.is_empty() {
        return MASK.to_owned();
    }
    mask_url_password(value)
}

/// The URL with the password of its user info and any `password=` query
/// parameter replaced by [`MASK`]; text that is no URL comes back unchanged.
fn mask_url_password(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let authority_start = scheme_end + 3;
    let rest = &url[authority_start..];
    let authority_len = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_len];
    let mut out = String::with_capacity(url.len());
    out.push_str(&url[..authority_start]);
    match authority.rfind('@') {
        Some(at) => {
            let userinfo = &authority[..at];
            match userinfo.find(':') {
                Some(colon) => {
                    out.push_str(&userinfo[..=colon]);
                    out.push_str(MASK);
                }
                None => out.push_str(userinfo),
            }
            out.push_str(&authority[at..]);
        }
        None => out.push_str(authority),
    }
    let tail = &rest[authority_len..];
    match tail.split_once('?') {
        Some((path, query)) => {
            out.push_str(path);
            out.push('?');
            let masked: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((name, _)) if name.eq_ignore_ascii_case("password") => {
                        format!("{name}={MASK}")
                    }
                    _ => pair.to_owned(),
                })
                .collect();
            out.push_str(&masked.join("&"));
        }
        None => out.push_str(tail),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_passwords_are_masked() {
        assert_eq!(
            mask_secrets("database_url", "postgres://hub:s3cr@t@db.internal:5432/hub"),
            "postgres://hub:****@db.internal:5432/hub"
        );
        assert_eq!(
            mask_secrets("mqtt_url", "mqtt://bridge:pw@broker:1883"),
            "mqtt://bridge:****@broker:1883"
        );
        assert_eq!(
            mask_secrets(
                "database_url",
                "postgres://hub@db/hub?sslmode=require&password=pw"
            ),
            "postgres://hub@db/hub?sslmode=require&password=****"
        );
    }

    #[test]
    fn values_without_secrets_are_unchanged() {
        for value in [
            "sqlite://hub.db",
            "postgres://hub@db/hub",
            "mqtt://broker:1883",
            "127.0.0.1:8080",
            "hub",
        ] {
            assert_eq!(mask_secrets("database_url", value), value);
        }
    }

    #[test]
    fn secret_settings_are_masked_whole() {
        assert!(is_secret_key("admin_token"));
        assert!(is_secret_key("mqtt_password"));
        assert!(!is_secret_key("max_declared"));
        assert_eq!(mask_secrets("admin_token", "abc"), MASK);
    }
}
