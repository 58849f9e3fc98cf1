//! `parse_any` (preset name, JSON, DARTS string or text form) never panics, and what it accepts
//! can be costed, checked against itself and rendered without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nat_arch::{cost::NetworkSpec, network_cost, parse_any, render, Space};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(g) = parse_any(text) {
        assert_eq!(g.validate(), Ok(()));
        assert_eq!(Space::NatPlusPlus.check_transition(&g, &g), Ok(vec![]));
        let spec = NetworkSpec { channels: 4, layers: 3, in_channels: 1, image_size: 5, num_classes: 2 };
        assert!(network_cost(&g, &spec).is_ok());
        let _ = render::genotype_svg(&g, text);
        let _ = render::genotype_dot(&g, text);
    }
});
