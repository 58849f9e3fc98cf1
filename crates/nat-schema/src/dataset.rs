//! Datasets by name and shape: the names a job or a worker may use, the wire form of a
//! [`DatasetShape`], and what a worker reports of a dataset it has ([`DatasetInfo`]).

use nat_arch::{Dataset, DatasetShape};
use nat_proto::v1;
use serde::{Deserialize, Serialize};

use crate::FieldError;

/// Longest dataset name, in bytes.
pub const MAX_NAME_LEN: usize = 64;

/// Checks a dataset name: a built-in name, or a user dataset's `[a-z0-9][a-z0-9._-]{0,63}` (the
/// folder name under a worker's data dir). The error names `field`.
pub fn check_name(field: &str, name: &str) -> Result<(), FieldError> {
    if Dataset::from_name(name).is_some() {
        return Ok(());
    }
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let rest_ok = chars
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '_' || c == '-');
    if first_ok && rest_ok && name.len() <= MAX_NAME_LEN {
        return Ok(());
    }
    let builtins: Vec<&str> = Dataset::ALL.iter().map(|d| d.name()).collect();
    let shown: String = name.chars().take(MAX_NAME_LEN).collect();
    Err(FieldError::new(
        field,
        format!(
            "{shown:?} is neither a built-in dataset ({}) nor a valid dataset name \
             (1 to {MAX_NAME_LEN} of a-z, 0-9, '.', '_', '-', starting with a letter or digit)",
            builtins.join(", ")
        ),
    ))
}

/// A shape from the wire, validated; `None` when absent or all zero (unset). Errors name
/// `<field>.channels`, `<field>.image_size` or `<field>.classes`.
pub fn shape_from_proto(
    field: &str,
    shape: Option<&v1::DatasetShape>,
) -> Result<Option<DatasetShape>, FieldError> {
    let Some(s) = shape else {
        return Ok(None);
    };
    if s.channels == 0 && s.image_size == 0 && s.classes == 0 {
        return Ok(None);
    }
    let shape = DatasetShape {
        channels: s.channels,
        image_size: s.image_size,
        classes: s.classes,
    };
    check_shape(field, &shape)?;
    Ok(Some(shape))
}

/// [`DatasetShape::validate`] with the error naming `<field>.<shape field>`.
pub fn check_shape(field: &str, shape: &DatasetShape) -> Result<(), FieldError> {
    shape.validate().map_err(|e| match e.split_once(": ") {
        Some((name, reason)) => FieldError::new(format!("{field}.{name}"), reason),
        None => FieldError::new(field, e),
    })
}

/// The wire form of a shape.
pub fn shape_to_proto(shape: DatasetShape) -> v1::DatasetShape {
    v1::DatasetShape {
        channels: shape.channels,
        image_size: shape.image_size,
        classes: shape.classes,
    }
}

/// The shape of a stored document's dataset: the stored one, validated, or, in documents
/// stored before shapes were, the built-in dataset's. The error names `dataset_shape`.
pub(crate) fn stored_shape(
    dataset: &str,
    stored: Option<DatasetShape>,
) -> Result<DatasetShape, String> {
    match (stored, Dataset::from_name(dataset)) {
        (Some(shape), _) => check_shape("dataset_shape", &shape)
            .map(|()| shape)
            .map_err(|e| e.to_string()),
        (None, Some(builtin)) => Ok(builtin.shape()),
        (None, None) => Err(format!(
            "missing field `dataset_shape` (dataset {dataset:?} is not built in)"
        )),
    }
}

/// Most dataset names listed in a [`waiting_reason`].
const MAX_LISTED: usize = 12;

/// Why a job's waiting tasks on `dataset` are not leased, from the datasets of the connected
/// (live) workers, one list per worker: `no worker is connected`, or `no registered worker has
/// dataset "x" (N workers connected: a, b)` when none lists it. `None` when one may run them; a
/// worker with an empty list has unknown datasets and may run anything.
pub fn waiting_reason(dataset: &str, connected: &[&[String]]) -> Option<String> {
    if connected.is_empty() {
        return Some("no worker is connected".into());
    }
    if connected
        .iter()
        .any(|names| names.is_empty() || names.iter().any(|n| n == dataset))
    {
        return None;
    }
    let mut names: Vec<&str> = Vec::new();
    for n in connected.iter().flat_map(|names| names.iter()) {
        if !names.contains(&n.as_str()) {
            names.push(n);
        }
    }
    let more = names.len().saturating_sub(MAX_LISTED);
    names.truncate(MAX_LISTED);
    let mut list = names.join(", ");
    if more > 0 {
        list.push_str(&format!(" and {more} more"));
    }
    let workers = match connected.len() {
        1 => "1 worker".to_string(),
        n => format!("{n} workers"),
    };
    Some(format!(
        "no registered worker has dataset {dataset:?} ({workers} connected: {list})"
    ))
}

/// A dataset a worker has on disk, as it reported it at registration (the JSON form of
/// `nat.v1.DatasetInfo`, kept with the worker's capabilities).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatasetInfo {
    /// Dataset name (one of the worker's `datasets`).
    pub name: String,
    /// Its shape.
    pub shape: DatasetShape,
    /// Training examples.
    pub train_examples: u64,
    /// Test examples (0 = a fixed part of train is held out as test).
    pub test_examples: u64,
    /// `builtin`, `image-folder`, `npz` or `safetensors` (free text, as reported).
    pub format: String,
}

impl DatasetInfo {
    /// From the wire, validated: the name as [`check_name`], the shape present and valid,
    /// `format` at most 64 bytes. Errors name `<field>.name`, `<field>.shape.channels`, ….
    pub fn from_proto(field: &str, info: &v1::DatasetInfo) -> Result<DatasetInfo, FieldError> {
        let name = info.name.trim();
        check_name(&format!("{field}.name"), name)?;
        let shape_field = format!("{field}.shape");
        let shape = shape_from_proto(&shape_field, info.shape.as_ref())?
            .ok_or_else(|| FieldError::new(&shape_field, "is required"))?;
        if info.format.len() > 64 {
            return Err(FieldError::new(
                format!("{field}.format"),
                format!("longer than 64 bytes ({} bytes)", info.format.len()),
            ));
        }
        Ok(DatasetInfo {
            name: name.to_string(),
            shape,
            train_examples: info.train_examples,
            test_examples: info.test_examples,
            format: info.format.trim().to_string(),
        })
    }

    /// The wire form.
    pub fn to_proto(&self) -> v1::DatasetInfo {
        v1::DatasetInfo {
            name: self.name.clone(),
            shape: Some(shape_to_proto(self.shape)),
            train_examples: self.train_examples,
            test_examples: self.test_examples,
            format: self.format.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_built_ins_or_folder_names() {
        for ok in [
            "digits",
            "cifar10",
            "my-cats",
            "0",
            "a.b_c-d",
            &"x".repeat(64),
        ] {
            assert_eq!(check_name("dataset", ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "My-Cats",
            "-cats",
            ".hidden",
            "a/b",
            "cats ",
            "é",
            &"x".repeat(65),
        ] {
            let e = check_name("dataset", bad).expect_err(bad);
            assert_eq!(e.field, "dataset");
            assert!(e.reason.contains("digits"), "{e}");
        }
    }

    #[test]
    fn shapes_from_the_wire_name_the_field() {
        let wire = |channels, image_size, classes| v1::DatasetShape {
            channels,
            image_size,
            classes,
        };
        assert_eq!(shape_from_proto("dataset_shape", None), Ok(None));
        assert_eq!(
            shape_from_proto("dataset_shape", Some(&wire(0, 0, 0))),
            Ok(None)
        );
        let shape = shape_from_proto("dataset_shape", Some(&wire(3, 64, 37)))
            .expect("valid")
            .expect("set");
        assert_eq!(shape_to_proto(shape), wire(3, 64, 37));
        for (w, field) in [
            (wire(2, 64, 37), "dataset_shape.channels"),
            (wire(3, 3, 37), "dataset_shape.image_size"),
            (wire(1, 28, 1), "dataset_shape.classes"),
            (wire(0, 28, 10), "dataset_shape.channels"),
        ] {
            let e = shape_from_proto("dataset_shape", Some(&w)).expect_err(field);
            assert_eq!(e.field, field);
        }
    }

    #[test]
    fn waiting_reasons_name_the_dataset_and_what_workers_have() {
        let v = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        assert_eq!(
            waiting_reason("my-cats", &[]).as_deref(),
            Some("no worker is connected")
        );
        let a = v(&["digits", "mnist"]);
        let b = v(&["mnist", "fashion-mnist"]);
        let c = v(&["digits"]);
        assert_eq!(
            waiting_reason("my-cats", &[&a, &b, &c]).as_deref(),
            Some(
                "no registered worker has dataset \"my-cats\" (3 workers connected: digits, \
                 mnist, fashion-mnist)"
            )
        );
        assert_eq!(waiting_reason("fashion-mnist", &[&a, &b]), None);
        // A worker that lists nothing may have anything.
        let unknown = Vec::new();
        assert_eq!(waiting_reason("my-cats", &[&a, &unknown]), None);
        let many: Vec<String> = (0..20).map(|i| format!("d{i}")).collect();
        let r = waiting_reason("x", &[&many]).expect("a reason");
        assert!(r.contains("(1 worker connected: d0, d1,"), "{r}");
        assert!(r.ends_with("d11 and 8 more)"), "{r}");
    }

    #[test]
    fn infos_round_trip_and_errors_name_the_field() {
        let wire = v1::DatasetInfo {
            name: "my-cats".into(),
            shape: Some(v1::DatasetShape {
                channels: 3,
                image_size: 32,
                classes: 2,
            }),
            train_examples: 100,
            test_examples: 20,
            format: "image-folder".into(),
        };
        let info = DatasetInfo::from_proto("i", &wire).expect("valid");
        assert_eq!(info.to_proto(), wire);
        let json = serde_json::to_value(&info).expect("encodes");
        assert_eq!(crate::decode("dataset info", &json), Ok(info));
        let mut no_shape = wire.clone();
        no_shape.shape = None;
        let e = DatasetInfo::from_proto("i", &no_shape).expect_err("no shape");
        assert_eq!(e.field, "i.shape");
        let mut bad = wire.clone();
        bad.shape = Some(v1::DatasetShape {
            channels: 3,
            image_size: 32,
            classes: 1,
        });
        let e = DatasetInfo::from_proto("i", &bad).expect_err("one class");
        assert_eq!(e.field, "i.shape.classes");
        let mut bad = wire;
        bad.name = "Cats".into();
        assert_eq!(
            DatasetInfo::from_proto("i", &bad).expect_err("name").field,
            "i.name"
        );
    }
}
