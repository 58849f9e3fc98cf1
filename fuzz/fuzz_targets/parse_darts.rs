//! The DARTS/NAT string parser never panics; whatever it accepts is valid and survives
//! print ∘ parse in both the pair and the triple forms.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nat_arch::Genotype;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(g) = Genotype::from_darts_str(text) {
        assert_eq!(g.validate(), Ok(()));
        let printed = g.to_darts_string();
        assert_eq!(Genotype::from_darts_str(&printed).as_ref(), Ok(&g));
        assert_eq!(Genotype::from_darts_str(&g.to_nat_string()).as_ref(), Ok(&g));
        assert_eq!(Genotype::from_text(&g.to_text()).as_ref(), Ok(&g));
    }
});
