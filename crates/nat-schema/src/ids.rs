//! The ids of jobs, tasks, workers and policy samples as distinct types, so that one cannot be
//! passed where another is expected.
//!
//! Each is a transparent wrapper: its JSON (serde) and its text ([`Display`](fmt::Display) /
//! [`FromStr`]) are those of the value it wraps, so stored documents and wire text are
//! unchanged.
//!
//! With the `sqlx` feature (enabled by the store) each id is also a PostgreSQL value, encoded and
//! decoded exactly as the value it wraps (`uuid` / `bigint`, and their arrays), so the PostgreSQL
//! backend binds and reads ids directly. There is deliberately no SQLite encoding: sqlx would
//! store a UUID there as a 16-byte BLOB, while the SQLite schema keeps ids as TEXT; the SQLite
//! backend binds `id.to_string()` and parses what it reads, so binding an id directly there does
//! not compile.

use std::fmt;
use std::num::ParseIntError;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// An id that does not parse: which kind of id, and the parser's error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseIdError {
    /// Not a UUID (job, task and worker ids).
    #[error("invalid {what}: {source}")]
    Uuid {
        /// The kind of id (`job id`).
        what: &'static str,
        /// The UUID parser's error.
        #[source]
        source: uuid::Error,
    },
    /// Not a 64-bit integer (sample ids).
    #[error("invalid {what}: {source}")]
    Int {
        /// The kind of id (`sample id`).
        what: &'static str,
        /// The integer parser's error.
        #[source]
        source: ParseIntError,
    },
}

macro_rules! uuid_id {
    ($(#[$meta:meta])* $name:ident, $what:literal) => {
        $(#[$meta])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
        )]
        #[serde(transparent)]
        pub struct $name(Uuid);

        // No `Default`: a default id would be either random or nil, and both would surprise
        // inside a derived `Default`.
        #[allow(clippy::new_without_default)]
        impl $name {
            /// A fresh random (v4) id.
            #[must_use]
            pub fn new() -> Self {
                Self(Uuid::new_v4())
            }

            /// The all-zero id (tests, placeholders).
            #[must_use]
            pub const fn nil() -> Self {
                Self(Uuid::nil())
            }

            /// The UUID this id wraps.
            #[must_use]
            pub const fn uuid(self) -> Uuid {
                self.0
            }
        }

        impl From<Uuid> for $name {
            fn from(id: Uuid) -> Self {
                Self(id)
            }
        }

        impl From<$name> for Uuid {
            fn from(id: $name) -> Self {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl FromStr for $name {
            type Err = ParseIdError;
            fn from_str(s: &str) -> Result<Self, ParseIdError> {
                Uuid::from_str(s)
                    .map(Self)
                    .map_err(|source| ParseIdError::Uuid { what: $what, source })
            }
        }

        #[cfg(feature = "sqlx")]
        pg_transparent!($name, Uuid);
    };
}

/// PostgreSQL encoding of an id: that of the value it wraps (`sqlx` feature).
#[cfg(feature = "sqlx")]
macro_rules! pg_transparent {
    ($name:ident, $inner:ty) => {
        impl sqlx::Type<sqlx::Postgres> for $name {
            fn type_info() -> sqlx::postgres::PgTypeInfo {
                <$inner as sqlx::Type<sqlx::Postgres>>::type_info()
            }

            fn compatible(ty: &sqlx::postgres::PgTypeInfo) -> bool {
                <$inner as sqlx::Type<sqlx::Postgres>>::compatible(ty)
            }
        }

        impl sqlx::postgres::PgHasArrayType for $name {
            fn array_type_info() -> sqlx::postgres::PgTypeInfo {
                <$inner as sqlx::postgres::PgHasArrayType>::array_type_info()
            }
        }

        impl sqlx::Encode<'_, sqlx::Postgres> for $name {
            fn encode_by_ref(
                &self,
                buf: &mut sqlx::postgres::PgArgumentBuffer,
            ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
                <$inner as sqlx::Encode<'_, sqlx::Postgres>>::encode_by_ref(&self.0, buf)
            }

            fn size_hint(&self) -> usize {
                <$inner as sqlx::Encode<'_, sqlx::Postgres>>::size_hint(&self.0)
            }
        }

        impl<'r> sqlx::Decode<'r, sqlx::Postgres> for $name {
            fn decode(
                value: sqlx::postgres::PgValueRef<'r>,
            ) -> Result<Self, sqlx::error::BoxDynError> {
                <$inner as sqlx::Decode<'r, sqlx::Postgres>>::decode(value).map(Self)
            }
        }
    };
}

uuid_id!(
    /// Id of a job (uuid v4).
    JobId,
    "job id"
);
uuid_id!(
    /// Id of a task (uuid v4).
    TaskId,
    "task id"
);
uuid_id!(
    /// Id of a registered worker (uuid v4).
    WorkerId,
    "worker id"
);

/// Id of a stored policy sample (database sequence, strictly increasing in insertion order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SampleId(i64);

impl SampleId {
    /// The number this id wraps.
    #[must_use]
    pub const fn get(self) -> i64 {
        self.0
    }
}

impl From<i64> for SampleId {
    fn from(id: i64) -> Self {
        Self(id)
    }
}

impl From<SampleId> for i64 {
    fn from(id: SampleId) -> Self {
        id.0
    }
}

impl fmt::Display for SampleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

#[cfg(feature = "sqlx")]
pg_transparent!(SampleId, i64);

impl FromStr for SampleId {
    type Err = ParseIdError;
    fn from_str(s: &str) -> Result<Self, ParseIdError> {
        i64::from_str(s)
            .map(Self)
            .map_err(|source| ParseIdError::Int {
                what: "sample id",
                source,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_json_are_the_inner_values() {
        let u = Uuid::new_v4();
        let id = JobId::from(u);
        assert_eq!(id.to_string(), u.to_string());
        assert_eq!(id.to_string().parse::<JobId>(), Ok(id));
        assert_eq!(
            serde_json::to_value(id).unwrap(),
            serde_json::to_value(u).unwrap()
        );
        let back: TaskId = serde_json::from_value(serde_json::to_value(u).unwrap()).unwrap();
        assert_eq!(back.uuid(), u);

        let s = SampleId::from(42);
        assert_eq!(s.to_string(), "42");
        assert_eq!("42".parse::<SampleId>(), Ok(s));
        assert_eq!(serde_json::to_value(s).unwrap(), serde_json::json!(42));
        assert_eq!(s.get(), 42);
    }

    #[test]
    fn bad_text_names_the_id() {
        let e = "nope".parse::<WorkerId>().unwrap_err();
        assert!(
            matches!(
                e,
                ParseIdError::Uuid {
                    what: "worker id",
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().starts_with("invalid worker id: "), "{e}");
        let e = "x".parse::<SampleId>().unwrap_err();
        assert!(e.to_string().starts_with("invalid sample id: "), "{e}");
    }
}
