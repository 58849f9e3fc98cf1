//! The JSON parser never panics; whatever it accepts is valid and survives print ∘ parse.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nat_arch::Genotype;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(g) = Genotype::from_json_str(text) {
        assert_eq!(g.validate(), Ok(()));
        assert_eq!(Genotype::from_json_str(&g.to_json()).as_ref(), Ok(&g));
        assert_eq!(Genotype::from_json_str(&g.to_json_pretty()).as_ref(), Ok(&g));
        let _ = g.canonical_hash();
    }
});
