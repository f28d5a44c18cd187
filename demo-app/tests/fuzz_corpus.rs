//! The JSON-LD importer's fuzz corpus and every crash it found, replayed on the stable
//! toolchain in the normal `cargo test` (see engine/tests/fuzz_corpus.rs and fuzz/README.md).

use std::fs;
use std::path::{Path, PathBuf};

#[test]
fn jsonld_corpus() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut n = 0;
    for dir in ["corpus", "regressions"] {
        let Ok(entries) = fs::read_dir(fuzz.join(dir).join("jsonld")) else {
            continue;
        };
        let mut files: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        files.sort();
        for file in files {
            let data = fs::read(&file).expect("read a corpus file");
            let run = std::panic::catch_unwind(|| reflow_app::fuzz_jsonld(&data));
            assert!(run.is_ok(), "jsonld: {} fails", file.display());
            n += 1;
        }
    }
    assert!(n > 0, "no JSON-LD corpus in {}", fuzz.display());
}

#[test]
fn a_spec_example_imports_whole_into_a_plain_ledger() {
    let text = include_str!(
        "../../tests/fixtures/valueflows/ex-production--00-simple-manufacturing-process.jsonld"
    );
    let mut ledger =
        reflow::Ledger::new_network("x", reflow::ActorId::from([7u8; 16])).expect("ledger");
    let before = ledger.heads();
    match reflow_app::jsonld::import_ledger(&mut ledger, text) {
        Ok(summary) => assert!(ledger.heads() != before, "{summary:?}"),
        Err(e) => assert_eq!(ledger.heads(), before, "refused whole: {e}"),
    }
}
