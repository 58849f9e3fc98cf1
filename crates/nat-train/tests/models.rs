//! Forward passes of every op, the evaluation networks and the supernet on real tensors.

mod common;

use nat_arch::{Cell, Dataset, Edge, Genotype, Node, Op, OpSet};
use nat_train::model::{Network, NetworkConfig, Supernet, SupernetConfig};
use nat_train::ModelError;
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

fn single_op_genotype(op: Op) -> Genotype {
    // Every edge carries `op`, so the op runs at stride 1 (normal cells, from every node) and at
    // stride 2 (reduction cells, from nodes 0 and 1).
    let cell = Cell {
        nodes: (0..3)
            .map(|i| Node {
                inputs: [Edge { op, from: i }, Edge { op, from: i + 1 }],
            })
            .collect(),
        concat: vec![2, 3, 4],
    };
    Genotype {
        normal: cell.clone(),
        reduce: cell,
    }
}

#[test]
fn every_op_runs_forward_and_backward_on_every_input_shape() {
    common::init_threads();
    for dataset in [Dataset::Digits, Dataset::Mnist, Dataset::Cifar10] {
        for op in Op::ALL {
            let vs = VarStore::new(Device::Cpu);
            let config = NetworkConfig::for_dataset(dataset, 4, 3, true);
            let net = Network::new(&vs.root(), &single_op_genotype(op), &config)
                .unwrap_or_else(|e| panic!("{op} on {dataset}: {e}"));
            let side = dataset.image_size() as i64;
            let x = Tensor::randn(
                [3, dataset.channels() as i64, side, side],
                (Kind::Float, Device::Cpu),
            );
            let out = net
                .forward(&x, true, 0.2)
                .unwrap_or_else(|e| panic!("{op} on {dataset}: {e}"));
            assert_eq!(out.logits.size(), vec![3, 10], "{op} on {dataset}");
            let aux = out.aux_logits.expect("aux head in training mode");
            assert_eq!(aux.size(), vec![3, 10]);
            (out.logits.sum(Kind::Float) + aux.sum(Kind::Float)).backward();
            let eval = net.forward(&x, false, 0.2).expect("eval forward");
            assert!(eval.aux_logits.is_none());
            let finite = eval.logits.isfinite().all().int64_value(&[]);
            assert_eq!(finite, 1, "{op} on {dataset}");
        }
    }
}

#[test]
fn bad_genotypes_and_inputs_are_errors_not_panics() {
    let vs = VarStore::new(Device::Cpu);
    let config = NetworkConfig::for_dataset(Dataset::Digits, 4, 3, false);
    let mut genotype = common::preset("darts-v2");
    genotype.normal.nodes[0].inputs[1].from = 5;
    let err = Network::new(&vs.root(), &genotype, &config).expect_err("forward reference");
    assert!(matches!(err, ModelError::InvalidGenotype(_)), "{err}");

    let mut genotype = common::preset("darts-v2");
    genotype.reduce.concat = vec![];
    assert!(Network::new(&vs.root(), &genotype, &config).is_err());

    let bad_config = NetworkConfig {
        layers: 0,
        ..config
    };
    let err =
        Network::new(&vs.root(), &common::preset("darts-v2"), &bad_config).expect_err("layers");
    assert!(err.to_string().contains("layers"), "{err}");

    // A batch of the wrong shape (3 channels into a grey network) is an Err from libtorch.
    let net =
        Network::new(&(vs.root() / "ok"), &common::preset("darts-v2"), &config).expect("build");
    let x = Tensor::zeros([2, 3, 8, 8], (Kind::Float, Device::Cpu));
    assert!(matches!(
        net.forward(&x, true, 0.0),
        Err(ModelError::Torch(_))
    ));
}

#[test]
fn supernet_runs_only_the_chosen_path_and_checks_cells() {
    common::init_threads();
    let vs = VarStore::new(Device::Cpu);
    let config = SupernetConfig::for_dataset(Dataset::Digits, 4, 3, 4, OpSet::NatFullyConcat);
    let supernet = Supernet::new(&vs.root(), &config).expect("supernet");
    let darts = common::preset("darts-v2");
    let x = Tensor::randn([4, 1, 8, 8], (Kind::Float, Device::Cpu));
    let logits = supernet
        .forward(&x, &darts.normal, &darts.reduce, true)
        .expect("forward");
    assert_eq!(logits.size(), vec![4, 10]);

    // Only the ops on the path get gradients.
    logits.sum(Kind::Float).backward();
    let vars = vs.variables();
    let has_grad = |name: &str| vars.get(name).map(|t| t.grad().defined()).unwrap_or(false);
    // DARTS normal node 2: sep_conv_3x3 from 0 and 1 → slots 0 and 1 of cell 0.
    assert!(has_grad("supernet.cell0.slot0.sep_conv_3x3.pw1"));
    assert!(!has_grad("supernet.cell0.slot0.dil_conv_5x5.pw"));
    assert!(!has_grad("supernet.cell0.slot0.conv_3x3.conv"));

    // A NAONet op is not in the NAT op set: an error naming the op.
    let mut naonet_op = darts.clone();
    naonet_op.normal.nodes[1].inputs[0].op = Op::Conv1x3_3x1;
    let err = supernet
        .forward(&x, &naonet_op.normal, &naonet_op.reduce, true)
        .expect_err("naonet op");
    assert!(err.to_string().contains("conv_1x3_3x1"), "{err}");
    // A 5-node cell does not fit a 4-node supernet.
    let enas = common::preset("enas");
    let err = supernet
        .forward(&x, &enas.normal, &enas.reduce, true)
        .expect_err("5 nodes");
    assert!(err.to_string().contains("5 nodes"), "{err}");
}
