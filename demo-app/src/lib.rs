//! The parts of the `reflow` command that other harnesses drive directly: the JSON-LD
//! importer and exporter (fuzzed by `fuzz/`, see docs/reliability.md) and the progress bars
//! it draws. The command itself is `src/main.rs`.

pub mod jsonld;
pub mod progress;

/// The JSON-LD importer's fuzz harness ([`jsonld::import_ledger`] on arbitrary bytes): a
/// file is imported whole or refused with an error, never half, never a panic, and the views
/// after an import equal a fresh fold. Called by `fuzz/fuzz_targets/jsonld.rs` and the
/// corpus regression test.
#[doc(hidden)]
pub fn fuzz_jsonld(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let actor = reflow::ActorId::from([7u8; 16]);
    let Ok(mut ledger) = reflow::Ledger::new_network("fuzz", actor) else {
        panic!("a new network");
    };
    let before = ledger.heads();
    match jsonld::import_ledger(&mut ledger, text) {
        Ok(_) => assert_eq!(
            ledger.snapshot(),
            ledger.snapshot_from_scratch(),
            "views differ from a fresh fold"
        ),
        Err(e) => {
            drop(e.to_string());
            assert_eq!(
                ledger.heads(),
                before,
                "a refused import changed the ledger"
            );
        }
    }
}
