//! Bounds on what one growth event may carry. Inputs from the network are held to
//! these by the collector (a record over a bound is rejected or trimmed, never a
//! crash), and the SDK applies the same bounds before anything leaves the app.

/// Longest accepted event name, in bytes.
pub const MAX_EVENT_NAME_BYTES: usize = 128;
/// Longest accepted app (`service.name`), in bytes.
pub const MAX_APP_BYTES: usize = 128;
/// Longest accepted raw user id, in bytes (it is hashed, but must be bounded to hash).
pub const MAX_USER_ID_BYTES: usize = 1024;
/// Longest accepted `source`, in bytes.
pub const MAX_SOURCE_BYTES: usize = 64;
/// Most properties kept per event; further ones are dropped and counted.
pub const MAX_PROPERTIES: usize = 64;
/// Longest property key, in bytes.
pub const MAX_PROPERTY_KEY_BYTES: usize = 128;
/// Longest property value, in bytes; longer values are cut at a character boundary.
pub const MAX_PROPERTY_VALUE_BYTES: usize = 1024;

/// Returns true for a name usable as an event name, app or source: non-empty,
/// within `max` bytes and free of control characters.
pub fn is_valid_name(name: &str, max: usize) -> bool {
    !name.is_empty() && name.len() <= max && !name.chars().any(char::is_control)
}

/// Cuts `value` to at most `max` bytes without splitting a character.
pub fn truncate_to(value: &str, max: usize) -> &str {
    if value.len() <= max {
        return value;
    }
    let mut end = max;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    &value[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_bounded_and_printable() {
        assert!(is_valid_name("expense_logged", MAX_EVENT_NAME_BYTES));
        assert!(!is_valid_name("", MAX_EVENT_NAME_BYTES));
        assert!(!is_valid_name("bad\nname", MAX_EVENT_NAME_BYTES));
        assert!(!is_valid_name(&"x".repeat(129), MAX_EVENT_NAME_BYTES));
    }

    #[test]
    fn truncation_keeps_characters_whole() {
        assert_eq!(truncate_to("héllo", 2), "h");
        assert_eq!(truncate_to("héllo", 3), "hé");
        assert_eq!(truncate_to("abc", 10), "abc");
    }
}
