//! Panics a test provokes on purpose: marked with [`EXPECTED`], kept out of the output by
//! [`quiet_expected_panics`], read back with [`panic_message`].

/// The marker of the panics a test provokes on purpose: put it in their message.
pub const EXPECTED: &str = "expected panic";

/// Silences the messages of panics whose message contains [`EXPECTED`], for the rest of the
/// test binary; every other panic is reported as usual. Idempotent.
pub fn quiet_expected_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if panic_message(info.payload()).contains(EXPECTED) {
                return;
            }
            previous(info);
        }));
    });
}

/// The message of a panic payload, or `""` if it is not a string.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("")
}
