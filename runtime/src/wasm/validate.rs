//! Cheap checks on uploaded bytes before anything is compiled.

use super::DeployError;
use wasmparser::Parser;

pub(crate) fn check_bytes(bytes: &[u8]) -> Result<(), DeployError> {
    if bytes.is_empty() {
        return Err(DeployError::Empty);
    }
    if !bytes.starts_with(b"\0asm") {
        return Err(DeployError::NotWasm);
    }
    if Parser::is_core_wasm(bytes) {
        return Err(DeployError::CoreModule);
    }
    if !Parser::is_component(bytes) {
        return Err(DeployError::Invalid("unknown WebAssembly binary version".into()));
    }
    Ok(())
}

/// True when an export name is a WASI 0.2.x `incoming-handler` (any patch version).
pub(crate) fn is_incoming_handler(export: &str) -> bool {
    export.strip_prefix("wasi:http/incoming-handler@0.2").is_some_and(|v| v.is_empty() || v.starts_with('.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_garbage_and_core_modules() {
        assert!(matches!(check_bytes(b""), Err(DeployError::Empty)));
        assert!(matches!(check_bytes(b"hello world"), Err(DeployError::NotWasm)));
        assert!(matches!(check_bytes(b"\0asm\x01\0\0\0"), Err(DeployError::CoreModule)));
        assert!(check_bytes(b"\0asm\x0d\0\x01\0").is_ok());
    }

    #[test]
    fn matches_any_0_2_handler() {
        assert!(is_incoming_handler("wasi:http/incoming-handler@0.2.0"));
        assert!(is_incoming_handler("wasi:http/incoming-handler@0.2.6"));
        assert!(!is_incoming_handler("wasi:http/incoming-handler@0.3.0"));
        assert!(!is_incoming_handler("wasi:http/incoming-handler@0.20.0"));
    }
}
