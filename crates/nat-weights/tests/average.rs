//! Averaging, checking and the document format, through the public API (and the safetensors
//! crate as an independent reader/writer).

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

use std::collections::{BTreeMap, HashMap};

use nat_weights::{
    average, from_f32, inspect, read_f32, read_metadata, Averager, Summary, WeightsError,
};
use proptest::prelude::*;
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

fn no_meta() -> BTreeMap<String, String> {
    BTreeMap::new()
}

/// A document with tensors `w` (2×3) and `b` (3) filled from `w` and `b`.
fn model(w: [f32; 6], b: [f32; 3]) -> Vec<u8> {
    from_f32(&[("w", vec![2, 3], &w), ("b", vec![3], &b)], no_meta()).unwrap()
}

/// A document written by the safetensors crate itself: `(name, dtype, shape, bytes)`.
fn raw(tensors: &[(&str, Dtype, Vec<usize>, Vec<u8>)]) -> Vec<u8> {
    let views: Vec<(&str, TensorView<'_>)> = tensors
        .iter()
        .map(|(name, dtype, shape, data)| {
            (*name, TensorView::new(*dtype, shape.clone(), data).unwrap())
        })
        .collect();
    safetensors::serialize(views, None).unwrap()
}

fn le_f32(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn le_i64(values: &[i64]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// The error inside an `Input` wrapper, checking the input index.
fn inner(error: WeightsError, input: usize) -> WeightsError {
    match error {
        WeightsError::Input { input: i, error } => {
            assert_eq!(i, input, "{error}");
            *error
        }
        other => panic!("expected an Input error, got {other:?}"),
    }
}

#[test]
fn mean_of_three_inputs_is_the_f64_mean_rounded_once() {
    let a = model([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], [0.1, 0.2, 0.3]);
    let b = model([2.0, 2.0, 0.5, -4.0, 1e-3, 7.0], [0.7, -0.2, 1.0]);
    let c = model([4.0, 3.0, 0.25, 1.0, 3.0, 6.5], [0.3, 0.1, 1e7]);
    let out = average(&[&a, &b, &c], no_meta()).unwrap();
    for name in ["w", "b"] {
        let (shape, xa) = read_f32(&a, name).unwrap();
        let (_, xb) = read_f32(&b, name).unwrap();
        let (_, xc) = read_f32(&c, name).unwrap();
        let (out_shape, mean) = read_f32(&out, name).unwrap();
        assert_eq!(out_shape, shape);
        let expected: Vec<f32> = (0..xa.len())
            .map(|i| ((f64::from(xa[i]) + f64::from(xb[i]) + f64::from(xc[i])) / 3.0) as f32)
            .collect();
        assert_eq!(mean, expected, "tensor {name}");
    }
    // Spot values: (1 + 2 + 4) / 3 and (2 + 2 + 3) / 3.
    let (_, w) = read_f32(&out, "w").unwrap();
    assert_eq!(w[0], (7.0f64 / 3.0) as f32);
    assert_eq!(w[1], (7.0f64 / 3.0) as f32);
    assert_eq!(w[3], (1.0f64 / 3.0) as f32);
}

#[test]
fn weights_scale_each_input() {
    let a = model([1.0, 0.0, 10.0, 1.0, 1.0, 1.0], [0.0; 3]);
    let b = model([5.0, 4.0, 2.0, 1.0, 1.0, 1.0], [1.0; 3]);
    let mut averager = Averager::new();
    averager.add(&a, 1.0).unwrap();
    averager.add(&b, 3.0).unwrap();
    assert_eq!(averager.inputs(), 2);
    assert_eq!(averager.total_weight(), 4.0);
    let out = averager.finish(no_meta()).unwrap();
    assert_eq!(
        read_f32(&out, "w").unwrap().1,
        vec![4.0, 3.0, 4.0, 1.0, 1.0, 1.0]
    );
    assert_eq!(read_f32(&out, "b").unwrap().1, vec![0.75; 3]);
}

#[test]
fn a_single_input_comes_back_bit_for_bit() {
    let a = model(
        [1.5, -0.0, 3.25e-30, 4.0, f32::MAX, f32::MIN_POSITIVE],
        [0.1, 0.2, 0.3],
    );
    let out = average(&[&a], no_meta()).unwrap();
    assert_eq!(out, a);
}

#[test]
fn invalid_weights_are_refused_and_change_nothing() {
    let a = model([1.0; 6], [1.0; 3]);
    let mut averager = Averager::new();
    for (call, weight) in [0.0, -1.0, f64::NAN, f64::INFINITY].into_iter().enumerate() {
        let error = inner(averager.add(&a, weight).unwrap_err(), call);
        assert!(
            matches!(error, WeightsError::InvalidWeight { .. }),
            "{error}"
        );
    }
    assert_eq!(averager.inputs(), 0);
    averager.add(&a, 2.0).unwrap();
    assert_eq!(averager.inputs(), 1);
}

#[test]
fn a_missing_tensor_is_named_with_its_input() {
    let a = model([1.0; 6], [1.0; 3]);
    let only_w = from_f32(&[("w", vec![2, 3], &[1.0; 6])], no_meta()).unwrap();
    let mut averager = Averager::new();
    averager.add(&a, 1.0).unwrap();
    let error = averager.add(&only_w, 1.0).unwrap_err();
    assert_eq!(error.input(), Some(1));
    assert_eq!(error.tensor(), Some("b"));
    assert!(error.to_string().contains("input 1"), "{error}");
    assert!(error.to_string().contains("`b`"), "{error}");
    assert!(matches!(inner(error, 1), WeightsError::MissingTensor { tensor } if tensor == "b"));
}

#[test]
fn an_extra_or_renamed_tensor_is_named_first_in_name_order() {
    let a = model([1.0; 6], [1.0; 3]);
    let extra = from_f32(
        &[
            ("w", vec![2, 3], &[1.0; 6]),
            ("b", vec![3], &[1.0; 3]),
            ("a", vec![1], &[0.0]),
        ],
        no_meta(),
    )
    .unwrap();
    let renamed = from_f32(
        &[("w", vec![2, 3], &[1.0; 6]), ("c", vec![3], &[1.0; 3])],
        no_meta(),
    )
    .unwrap();
    let mut averager = Averager::new();
    averager.add(&a, 1.0).unwrap();
    let error = inner(averager.add(&extra, 1.0).unwrap_err(), 1);
    assert!(
        matches!(&error, WeightsError::UnexpectedTensor { tensor } if tensor == "a"),
        "{error}"
    );
    // `b` (missing) sorts before `c` (unexpected).
    let error = inner(averager.add(&renamed, 1.0).unwrap_err(), 2);
    assert!(
        matches!(&error, WeightsError::MissingTensor { tensor } if tensor == "b"),
        "{error}"
    );
    assert_eq!(averager.inputs(), 1);
}

#[test]
fn a_shape_mismatch_is_named_and_leaves_the_average_untouched() {
    let a = model([1.0; 6], [1.0; 3]);
    let b = model([3.0; 6], [3.0; 3]);
    let transposed = from_f32(
        &[("w", vec![3, 2], &[9.0; 6]), ("b", vec![3], &[9.0; 3])],
        no_meta(),
    )
    .unwrap();
    let mut averager = Averager::new();
    averager.add(&a, 1.0).unwrap();
    let error = inner(averager.add(&transposed, 1.0).unwrap_err(), 1);
    match error {
        WeightsError::ShapeMismatch {
            tensor,
            expected,
            found,
        } => {
            assert_eq!(tensor, "w");
            assert_eq!(expected, vec![2, 3]);
            assert_eq!(found, vec![3, 2]);
        }
        other => panic!("{other:?}"),
    }
    // The refused input added nothing, not even `b` (which sorts before `w`).
    averager.add(&b, 1.0).unwrap();
    let out = averager.finish(no_meta()).unwrap();
    assert_eq!(read_f32(&out, "b").unwrap().1, vec![2.0; 3]);
    assert_eq!(read_f32(&out, "w").unwrap().1, vec![2.0; 6]);
}

#[test]
fn a_dtype_mismatch_is_named() {
    let a = raw(&[("x", Dtype::F32, vec![2], le_f32(&[1.0, 2.0]))]);
    let b = raw(&[(
        "x",
        Dtype::F64,
        vec![2],
        [1.0f64, 2.0].iter().flat_map(|v| v.to_le_bytes()).collect(),
    )]);
    let mut averager = Averager::new();
    averager.add(&a, 1.0).unwrap();
    let error = inner(averager.add(&b, 1.0).unwrap_err(), 1);
    assert!(
        matches!(&error, WeightsError::DtypeMismatch { tensor, expected: "F32", found: "F64" } if tensor == "x"),
        "{error}"
    );
}

#[test]
fn non_finite_values_are_refused_naming_the_tensor_and_element() {
    let good = model([1.0; 6], [1.0; 3]);
    let nan = model([1.0, 1.0, 1.0, 1.0, f32::NAN, 1.0], [1.0; 3]);
    let inf = model([1.0; 6], [1.0, f32::NEG_INFINITY, 1.0]);
    assert!(inspect(&good).is_ok());
    match inspect(&nan).unwrap_err() {
        WeightsError::NonFinite {
            tensor,
            index,
            value,
        } => {
            assert_eq!(tensor, "w");
            assert_eq!(index, 4);
            assert!(value.is_nan());
        }
        other => panic!("{other:?}"),
    }
    let mut averager = Averager::new();
    let error = inner(averager.add(&nan, 1.0).unwrap_err(), 0);
    assert!(
        matches!(&error, WeightsError::NonFinite { tensor, index: 4, .. } if tensor == "w"),
        "{error}"
    );
    averager.add(&good, 1.0).unwrap();
    let error = inner(averager.add(&inf, 1.0).unwrap_err(), 2);
    assert!(
        matches!(&error, WeightsError::NonFinite { tensor, index: 1, value } if tensor == "b" && *value == f64::NEG_INFINITY),
        "{error}"
    );
    let out = averager.finish(no_meta()).unwrap();
    assert_eq!(out, good);
}

#[test]
fn non_finite_half_and_double_values_are_refused() {
    let f16_inf = half::f16::INFINITY.to_bits().to_le_bytes().to_vec();
    let bf16_nan = half::bf16::NAN.to_bits().to_le_bytes().to_vec();
    let f64_nan = f64::NAN.to_le_bytes().to_vec();
    for (dtype, data) in [
        (Dtype::F16, f16_inf),
        (Dtype::BF16, bf16_nan),
        (Dtype::F64, f64_nan),
    ] {
        let doc = raw(&[("t", dtype, vec![1], data)]);
        let error = inspect(&doc).unwrap_err();
        assert!(
            matches!(&error, WeightsError::NonFinite { tensor, index: 0, .. } if tensor == "t"),
            "{dtype:?}: {error}"
        );
    }
}

#[test]
fn unsupported_dtypes_are_refused_naming_the_tensor() {
    let doc = raw(&[
        ("a", Dtype::F32, vec![1], le_f32(&[1.0])),
        ("mask", Dtype::U8, vec![2], vec![0, 1]),
    ]);
    let error = inspect(&doc).unwrap_err();
    assert!(
        matches!(&error, WeightsError::UnsupportedDtype { tensor, .. } if tensor == "mask"),
        "{error}"
    );
    let error = Averager::new().add(&doc, 1.0).unwrap_err();
    assert_eq!(error.tensor(), Some("mask"));
}

#[test]
fn garbage_is_malformed() {
    let error = inspect(b"not a safetensors file").unwrap_err();
    assert!(matches!(error, WeightsError::Malformed(_)), "{error}");
    let mut truncated = model([1.0; 6], [1.0; 3]);
    truncated.pop();
    assert!(matches!(
        inspect(&truncated).unwrap_err(),
        WeightsError::Malformed(_)
    ));
    let error = average(&[&model([1.0; 6], [1.0; 3]), &truncated], no_meta()).unwrap_err();
    assert!(matches!(inner(error, 1), WeightsError::Malformed(_)));
}

#[test]
fn integer_tensors_take_the_maximum_and_other_dtypes_keep_theirs() {
    let doc = |steps: i64, counts: [i32; 2], h: f32, d: f64| {
        raw(&[
            (
                "bn.num_batches_tracked",
                Dtype::I64,
                vec![],
                le_i64(&[steps]),
            ),
            (
                "counts",
                Dtype::I32,
                vec![2],
                counts.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ),
            (
                "h",
                Dtype::F16,
                vec![1],
                half::f16::from_f32(h).to_bits().to_le_bytes().to_vec(),
            ),
            (
                "bh",
                Dtype::BF16,
                vec![1],
                half::bf16::from_f32(h).to_bits().to_le_bytes().to_vec(),
            ),
            ("d", Dtype::F64, vec![1], d.to_le_bytes().to_vec()),
        ])
    };
    let a = doc(100, [-5, 7], 1.0, 0.1);
    let b = doc(350, [-9, 3], 2.0, 0.2);
    let c = doc(200, [-7, 1], 4.5, 0.6);
    let mut averager = Averager::new();
    averager.add(&a, 1.0).unwrap();
    averager.add(&b, 2.0).unwrap();
    averager.add(&c, 1.0).unwrap();
    let out = averager.finish(no_meta()).unwrap();
    let parsed = SafeTensors::deserialize(&out).unwrap();
    let t = parsed.tensor("bn.num_batches_tracked").unwrap();
    assert_eq!((t.dtype(), t.shape()), (Dtype::I64, &[][..]));
    assert_eq!(t.data(), &le_i64(&[350])[..]);
    let t = parsed.tensor("counts").unwrap();
    assert_eq!(t.dtype(), Dtype::I32);
    assert_eq!(
        t.data(),
        &[-5i32, 7]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect::<Vec<_>>()[..]
    );
    // (1 + 2·2 + 4.5) / 4 = 2.375, exact in f16 and bf16.
    let t = parsed.tensor("h").unwrap();
    assert_eq!(t.dtype(), Dtype::F16);
    assert_eq!(
        half::f16::from_le_bytes([t.data()[0], t.data()[1]]).to_f32(),
        2.375
    );
    let t = parsed.tensor("bh").unwrap();
    assert_eq!(t.dtype(), Dtype::BF16);
    assert_eq!(
        half::bf16::from_le_bytes([t.data()[0], t.data()[1]]).to_f32(),
        2.375
    );
    let t = parsed.tensor("d").unwrap();
    assert_eq!(t.dtype(), Dtype::F64);
    assert_eq!(
        f64::from_le_bytes(t.data().try_into().unwrap()),
        (0.1 + 0.2 * 2.0 + 0.6) / 4.0
    );
    // Every tensor is aligned to its element size in the output.
    let (header_len, _) = SafeTensors::read_metadata(&out).unwrap();
    for (name, view) in parsed.iter() {
        let offset = view.data().as_ptr() as usize - out.as_ptr() as usize - 8 - header_len;
        assert_eq!(
            offset % (view.dtype().bitsize() / 8),
            0,
            "{name} at {offset}"
        );
    }
}

#[test]
fn f64_sums_that_overflow_are_refused_at_finish() {
    let big = raw(&[("d", Dtype::F64, vec![1], f64::MAX.to_le_bytes().to_vec())]);
    let error = average(&[&big, &big], no_meta()).unwrap_err();
    assert!(
        matches!(&error, WeightsError::NonFiniteResult { tensor, index: 0, dtype: "F64" } if tensor == "d"),
        "{error}"
    );
}

#[test]
fn metadata_round_trips_sorted_and_deterministic() {
    let a = model([1.0; 6], [1.0; 3]);
    let mut metadata = BTreeMap::new();
    metadata.insert("version".to_owned(), "17".to_owned());
    metadata.insert("job".to_owned(), "job-\"42\"\n".to_owned());
    metadata.insert("averaged_from".to_owned(), "3 shards, é".to_owned());
    let out = average(&[&a, &a, &a], metadata.clone()).unwrap();
    assert_eq!(read_metadata(&out).unwrap(), metadata);
    // The safetensors crate reads the same map.
    let (_, header) = SafeTensors::read_metadata(&out).unwrap();
    let expected: HashMap<String, String> = metadata.clone().into_iter().collect();
    assert_eq!(header.metadata().as_ref(), Some(&expected));
    // Same inputs, same bytes; keys in sorted order in the header.
    assert_eq!(average(&[&a, &a, &a], metadata).unwrap(), out);
    let text = String::from_utf8_lossy(&out[8..200]);
    let (p1, p2, p3) = (
        text.find("averaged_from"),
        text.find("\"job\""),
        text.find("version"),
    );
    assert!(p1 < p2 && p2 < p3, "{text}");
    assert_eq!(read_metadata(&a).unwrap(), BTreeMap::new());
}

#[test]
fn finishing_with_no_input_is_an_error() {
    assert!(matches!(
        Averager::new().finish(no_meta()).unwrap_err(),
        WeightsError::NoInputs
    ));
    assert!(matches!(
        average(&[], no_meta()).unwrap_err(),
        WeightsError::NoInputs
    ));
    let mut averager = Averager::new();
    let _ = averager.add(b"junk", 1.0).unwrap_err();
    assert!(matches!(
        averager.finish(no_meta()).unwrap_err(),
        WeightsError::NoInputs
    ));
}

#[test]
fn inspect_counts_tensors_parameters_and_bytes() {
    let doc = raw(&[
        ("w", Dtype::F32, vec![4, 5], le_f32(&[0.5; 20])),
        ("n", Dtype::I64, vec![], le_i64(&[3])),
        ("h", Dtype::F16, vec![3], vec![0; 6]),
    ]);
    assert_eq!(
        inspect(&doc).unwrap(),
        Summary {
            tensors: 3,
            parameters: 24,
            bytes: 80 + 8 + 6
        }
    );
}

#[test]
fn from_f32_refuses_bad_tensors_and_read_f32_names_what_is_missing() {
    let error = from_f32(&[("w", vec![2, 2], &[1.0; 3])], no_meta()).unwrap_err();
    assert!(
        matches!(&error, WeightsError::LengthMismatch { tensor, expected: 4, found: 3, .. } if tensor == "w"),
        "{error}"
    );
    let error = from_f32(&[("w", vec![1], &[1.0]), ("w", vec![1], &[2.0])], no_meta()).unwrap_err();
    assert!(matches!(&error, WeightsError::DuplicateTensor { tensor } if tensor == "w"));
    let error = from_f32(&[("__metadata__", vec![1], &[1.0])], no_meta()).unwrap_err();
    assert!(matches!(&error, WeightsError::ReservedName { .. }));
    let error = from_f32(&[("w", vec![usize::MAX, 2], &[])], no_meta()).unwrap_err();
    assert!(matches!(&error, WeightsError::TooLarge { tensor, .. } if tensor == "w"));

    let doc = raw(&[
        ("w", Dtype::F32, vec![1], le_f32(&[1.0])),
        ("n", Dtype::I64, vec![], le_i64(&[1])),
    ]);
    let error = read_f32(&doc, "nope").unwrap_err();
    assert!(matches!(&error, WeightsError::NotFound { tensor } if tensor == "nope"));
    assert!(error.to_string().contains("`nope`"));
    let error = read_f32(&doc, "n").unwrap_err();
    assert!(
        matches!(&error, WeightsError::NotF32 { tensor, dtype } if tensor == "n" && dtype == "I64"),
        "{error}"
    );
    assert_eq!(read_f32(&doc, "w").unwrap(), (vec![1], vec![1.0]));
}

#[test]
fn from_f32_writes_what_safetensors_reads_including_odd_names_and_empty_tensors() {
    let names = [
        "a\"quote",
        "back\\slash",
        "new\nline",
        "ünï",
        "empty",
        "scalar",
    ];
    let tensors: Vec<(&str, Vec<usize>, &[f32])> = vec![
        (names[0], vec![1], &[1.0]),
        (names[1], vec![2], &[2.0, 3.0]),
        (names[2], vec![1, 1], &[4.0]),
        (names[3], vec![3], &[5.0, 6.0, 7.0]),
        (names[4], vec![0, 4], &[]),
        (names[5], vec![], &[8.0]),
    ];
    let doc = from_f32(&tensors, no_meta()).unwrap();
    let parsed = SafeTensors::deserialize(&doc).unwrap();
    assert_eq!(parsed.len(), names.len());
    for (name, shape, values) in &tensors {
        let view = parsed.tensor(name).unwrap();
        assert_eq!(view.shape(), &shape[..]);
        assert_eq!(view.data(), &le_f32(values)[..]);
        assert_eq!(
            read_f32(&doc, name).unwrap(),
            (shape.clone(), values.to_vec())
        );
    }
    let out = average(&[&doc, &doc], no_meta()).unwrap();
    assert_eq!(out, doc);
}

/// Random inputs: the shapes, every input's values per tensor, every input's weight.
type Case = (Vec<Vec<usize>>, Vec<Vec<Vec<f32>>>, Vec<f64>);

/// Random models: tensor `t{i}` of a random shape, the same shapes in every input.
fn inputs_strategy() -> impl Strategy<Value = Case> {
    prop::collection::vec(prop::collection::vec(1usize..5, 0..3), 1..5).prop_flat_map(|shapes| {
        let sizes: Vec<usize> = shapes.iter().map(|s| s.iter().product()).collect();
        let one_input = sizes
            .iter()
            .map(|&n| prop::collection::vec(-1e6f32..1e6f32, n))
            .collect::<Vec<_>>();
        (1usize..7).prop_flat_map(move |k| {
            (
                Just(shapes.clone()),
                prop::collection::vec(one_input.clone(), k),
                prop::collection::vec(0.01f64..100.0, k),
            )
        })
    })
}

proptest! {
    #[test]
    fn weighted_mean_matches_a_naive_mean((shapes, inputs, weights) in inputs_strategy()) {
        let names: Vec<String> = (0..shapes.len()).map(|i| format!("t{i}")).collect();
        let docs: Vec<Vec<u8>> = inputs
            .iter()
            .map(|tensors| {
                let list: Vec<(&str, Vec<usize>, &[f32])> = names
                    .iter()
                    .zip(&shapes)
                    .zip(tensors)
                    .map(|((n, s), v)| (n.as_str(), s.clone(), v.as_slice()))
                    .collect();
                from_f32(&list, BTreeMap::new()).unwrap()
            })
            .collect();
        let mut averager = Averager::new();
        for (doc, &w) in docs.iter().zip(&weights) {
            averager.add(doc, w).unwrap();
        }
        prop_assert_eq!(averager.inputs(), docs.len());
        let out = averager.finish(BTreeMap::new()).unwrap();
        prop_assert_eq!(inspect(&out).unwrap().tensors, shapes.len());
        let total: f64 = weights.iter().sum();
        for (t, name) in names.iter().enumerate() {
            let (shape, got) = read_f32(&out, name).unwrap();
            prop_assert_eq!(&shape, &shapes[t]);
            for (i, g) in got.iter().enumerate() {
                let naive: f64 = inputs.iter().zip(&weights).map(|(x, w)| w * f64::from(x[t][i])).sum::<f64>() / total;
                // Same f64 products summed in the same order, one rounding: bit-equal.
                prop_assert_eq!(*g, naive as f32, "{} [{}]", name, i);
                // And within the inputs' range (a convex combination).
                let lo = inputs.iter().map(|x| x[t][i]).fold(f32::INFINITY, f32::min);
                let hi = inputs.iter().map(|x| x[t][i]).fold(f32::NEG_INFINITY, f32::max);
                prop_assert!(lo <= *g && *g <= hi);
            }
        }
        // Equal weights through `average` match the equal-weight naive mean exactly.
        let refs: Vec<&[u8]> = docs.iter().map(Vec::as_slice).collect();
        let out = average(&refs, BTreeMap::new()).unwrap();
        for (t, name) in names.iter().enumerate() {
            let got = read_f32(&out, name).unwrap().1;
            for (i, g) in got.iter().enumerate() {
                let naive = (inputs.iter().map(|x| f64::from(x[t][i])).sum::<f64>() / inputs.len() as f64) as f32;
                prop_assert_eq!(*g, naive);
            }
        }
    }
}
