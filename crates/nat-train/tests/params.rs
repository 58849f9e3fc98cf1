//! The parameter count (and multiply-adds) of every preset's libtorch network equals nat-arch's
//! cost model exactly, at several widths, depths and input shapes.

mod common;

use nat_arch::{network_cost, Dataset, NetworkSpec};
use nat_train::model::{count_params, Network, NetworkConfig};
use tch::nn::VarStore;
use tch::Device;

fn check(dataset: Dataset, channels: i64, layers: i64, auxiliary: bool) {
    for preset in nat_arch::presets::all() {
        let genotype = preset.genotype();
        let vs = VarStore::new(Device::Cpu);
        let config = NetworkConfig::for_dataset(dataset, channels, layers, auxiliary);
        let net = Network::new(&vs.root(), &genotype, &config)
            .unwrap_or_else(|e| panic!("{}: {e}", preset.name));
        let ours = count_params(&vs, "net");
        let spec = NetworkSpec::for_dataset(dataset, channels as u64, layers as u64);
        let cost =
            network_cost(&genotype, &spec).unwrap_or_else(|e| panic!("{}: {e}", preset.name));
        assert_eq!(
            ours,
            cost.params(),
            "params of {} at C={channels} L={layers} on {dataset}",
            preset.name
        );
        assert_eq!(
            net.madds(),
            cost.madds(),
            "madds of {} at C={channels} L={layers} on {dataset}",
            preset.name
        );
        // Every trainable tensor is either in the counted network or the auxiliary head.
        let all: u64 = vs
            .trainable_variables()
            .iter()
            .map(|t| t.numel() as u64)
            .sum();
        let aux = count_params(&vs, "aux");
        assert_eq!(all, ours + aux, "{}", preset.name);
        assert_eq!(aux > 0, auxiliary, "{}", preset.name);
    }
}

#[test]
fn every_preset_matches_the_cost_model_on_cifar_shapes() {
    common::init_threads();
    check(Dataset::Cifar10, 16, 8, false);
    check(Dataset::Cifar10, 36, 20, true);
}

#[test]
fn every_preset_matches_the_cost_model_on_grey_and_small_images() {
    common::init_threads();
    check(Dataset::FashionMnist, 8, 5, true);
    check(Dataset::Digits, 6, 3, false);
    check(Dataset::Digits, 4, 2, false);
}

#[test]
fn darts_v2_at_the_paper_setting_has_the_published_size() {
    // DARTS reports 3.3 M parameters for DARTS_V2 at C = 36, L = 20 (auxiliary head excluded).
    let vs = VarStore::new(Device::Cpu);
    let config = NetworkConfig::for_dataset(Dataset::Cifar10, 36, 20, true);
    Network::new(&vs.root(), &common::preset("darts-v2"), &config).expect("build");
    let params = count_params(&vs, "net");
    assert!((3_300_000..3_400_000).contains(&params), "{params}");
}
