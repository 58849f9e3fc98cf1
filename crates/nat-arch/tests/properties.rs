//! Property tests: format round trips, hash invariance, and that masked transitions stay in the
//! space.

use nat_arch::{
    parse_any, transition::TransitionError, Cell, CellKind, Edge, Genotype, NatAction, Node, Op,
    OpSet, Space,
};
use proptest::prelude::*;

fn cell_strategy(b: usize, ops: &'static [Op]) -> impl Strategy<Value = Cell> {
    let nodes: Vec<_> = (0..b)
        .map(|i| {
            let t = i + 2;
            (
                (proptest::sample::select(ops), 0..t),
                (proptest::sample::select(ops), 0..t),
            )
                .prop_map(|((o0, f0), (o1, f1))| Node::new(Edge::new(o0, f0), Edge::new(o1, f1)))
        })
        .collect();
    let concat =
        proptest::sample::subsequence((2..b + 2).collect::<Vec<_>>(), 1..=b).prop_shuffle();
    (nodes, concat).prop_map(|(nodes, concat)| Cell { nodes, concat })
}

fn genotype_in(ops: &'static [Op]) -> impl Strategy<Value = Genotype> {
    (1usize..=6).prop_flat_map(move |b| {
        (cell_strategy(b, ops), cell_strategy(b, ops))
            .prop_map(|(normal, reduce)| Genotype { normal, reduce })
    })
}

fn any_genotype() -> impl Strategy<Value = Genotype> {
    genotype_in(&Op::ALL)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn generated_genotypes_are_valid(g in any_genotype()) {
        prop_assert_eq!(g.validate(), Ok(()));
    }

    #[test]
    fn json_round_trip(g in any_genotype()) {
        prop_assert_eq!(Genotype::from_json_str(&g.to_json()), Ok(g.clone()));
        prop_assert_eq!(Genotype::from_json_str(&g.to_json_pretty()), Ok(g.clone()));
        let via_serde: Genotype = serde_json::from_str(&g.to_json()).expect("serde reads it");
        prop_assert_eq!(&via_serde, &g);
        prop_assert_eq!(serde_json::to_value(&g).expect("serde writes it"), g.to_json_value());
        prop_assert_eq!(serde_json::to_string(&g).expect("serde writes it"), g.to_json());
    }

    #[test]
    fn darts_round_trip(g in any_genotype()) {
        prop_assert_eq!(Genotype::from_darts_str(&g.to_darts_string()), Ok(g.clone()));
        prop_assert_eq!(Genotype::from_darts_str(&g.to_nat_string()), Ok(g.clone()));
        // print ∘ parse is the identity on printed strings.
        let s = g.to_darts_string();
        prop_assert_eq!(Genotype::from_darts_str(&s).map(|x| x.to_darts_string()), Ok(s));
    }

    #[test]
    fn text_round_trip(g in any_genotype()) {
        prop_assert_eq!(Genotype::from_text(&g.to_text()), Ok(g.clone()));
        prop_assert_eq!(parse_any(&g.to_text()), Ok(g.clone()));
    }

    #[test]
    fn hash_invariance(g in any_genotype(), swaps in proptest::collection::vec(any::<bool>(), 12), rot in 0usize..6) {
        let mut h = g.clone();
        for (node, swap) in h.normal.nodes.iter_mut().chain(h.reduce.nodes.iter_mut()).zip(&swaps) {
            if *swap {
                node.inputs.swap(0, 1);
            }
        }
        let n = h.normal.concat.len();
        h.normal.concat.rotate_left(rot % n);
        h.reduce.concat.reverse();
        prop_assert_eq!(g.canonical_hash(), h.canonical_hash());
        prop_assert!(g.equivalent(&h));
        // Same hash whatever the format it went through.
        let from_darts = Genotype::from_darts_str(&h.to_darts_string()).expect("parses");
        prop_assert_eq!(from_darts.canonical_hash(), g.canonical_hash());
        prop_assert_eq!(g.canonical().canonical(), g.canonical());
    }

    #[test]
    fn hash_separates_op_changes(g in any_genotype(), node in 0usize..6, input in 0usize..2, op in proptest::sample::select(&Op::ALL[..])) {
        let mut h = g.clone();
        let idx = node % h.normal.nodes.len();
        let old = h.normal.nodes[idx].inputs[input].op;
        h.normal.nodes[idx].inputs[input].op = op;
        if old != op && h.normal.nodes[idx].inputs[0] != h.normal.nodes[idx].inputs[1] {
            let other = h.normal.nodes[idx].inputs[1 - input];
            // Unless the change merely swapped two identical-source inputs, the network differs.
            let swapped = other.from == h.normal.nodes[idx].inputs[input].from && other.op == old;
            if !swapped {
                prop_assert_ne!(g.canonical_hash(), h.canonical_hash());
            }
        }
    }

    /// Every transformation sampled from the masks lands inside the space.
    #[test]
    fn masked_transitions_stay_in_space(
        space in proptest::sample::select(&Space::ALL[..]),
        seed_choices in proptest::collection::vec(any::<prop::sample::Index>(), 24),
        g in prop_oneof![genotype_in(OpSet::NatPlusPlus.ops()).boxed(), genotype_in(OpSet::NatFullyConcat.ops()).boxed()],
    ) {
        let set = space.op_set();
        prop_assume!(g.validate_ops(set).is_ok());
        let mut b = g.clone();
        let mut k = 0;
        let mut expected_changes = 0;
        for kind in CellKind::ALL {
            for node in &mut b.cell_mut(kind).nodes {
                for e in &mut node.inputs {
                    let mask = space.mask(e.op);
                    let allowed: Vec<Op> = set.ops().iter().zip(&mask).filter(|(_, m)| **m).map(|(o, _)| *o).collect();
                    prop_assert!(!allowed.is_empty());
                    let new = *seed_choices[k % seed_choices.len()].get(&allowed);
                    k += 1;
                    if new != e.op {
                        expected_changes += 1;
                    }
                    e.op = new;
                }
            }
        }
        let changes = space.check_transition(&g, &b);
        prop_assert!(changes.is_ok(), "{:?}", changes);
        prop_assert_eq!(changes.map(|c| c.len()).unwrap_or(0), expected_changes);
        prop_assert_eq!(b.validate(), Ok(()));
        prop_assert_eq!(b.validate_ops(set), Ok(()));
    }

    /// NAT's three actions always give a reachable genotype; a move outside the mask is rejected
    /// and the error names that edge.
    #[test]
    fn nat_actions_and_rejections(
        g in genotype_in(OpSet::NatPlusPlus.ops()),
        actions in proptest::collection::vec(proptest::sample::select(&NatAction::ALL[..]), 24),
        target in proptest::sample::select(OpSet::NatPlusPlus.ops()),
    ) {
        let mut b = g.clone();
        let mut k = 0;
        for kind in CellKind::ALL {
            for node in &mut b.cell_mut(kind).nodes {
                for e in &mut node.inputs {
                    e.op = actions[k % actions.len()].apply(e.op);
                    k += 1;
                }
            }
        }
        prop_assert!(Space::Nat.check_transition(&g, &b).is_ok());

        let old = g.reduce.nodes[0].inputs[1].op;
        if !Space::NatPlusPlus.allows(old, target) {
            let mut c = g.clone();
            c.reduce.nodes[0].inputs[1].op = target;
            match Space::NatPlusPlus.check_transition(&g, &c) {
                Err(TransitionError::Disallowed { violations, .. }) => {
                    prop_assert_eq!(violations.len(), 1);
                    let v = &violations[0];
                    prop_assert_eq!((v.change.cell, v.change.node, v.change.from), (CellKind::Reduce, 2, g.reduce.nodes[0].inputs[1].from));
                    let msg = v.to_string();
                    let want = format!("reduce cell, edge {}->2", v.change.from);
                    prop_assert!(msg.contains(&want), "{}", msg);
                }
                other => prop_assert!(false, "expected a violation, got {:?}", other),
            }
        }
    }

    /// The parsers never panic, whatever the input.
    #[test]
    fn parsers_do_not_panic(s in "\\PC{0,200}") {
        let _ = parse_any(&s);
        let _ = Genotype::from_darts_str(&s);
        let _ = Genotype::from_json_str(&s);
        let _ = Genotype::from_text(&s);
    }

    /// Mutating a valid DARTS string (cutting it) never panics and either parses or errors.
    #[test]
    fn truncated_darts_strings(g in any_genotype(), cut in any::<prop::sample::Index>()) {
        let s = g.to_darts_string();
        let mut at = cut.index(s.len());
        while !s.is_char_boundary(at) {
            at -= 1;
        }
        let r = Genotype::from_darts_str(&s[..at]);
        prop_assert!(r.is_err() || at == s.len());
    }
}
