//! Operations and operation sets.

use serde::{Deserialize, Serialize};

/// One operation an edge can carry. Names match the official NAT/NAT++/DARTS code exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    #[serde(rename = "max_pool_3x3")]
    MaxPool3x3,
    #[serde(rename = "max_pool_5x5")]
    MaxPool5x5,
    #[serde(rename = "avg_pool_3x3")]
    AvgPool3x3,
    #[serde(rename = "avg_pool_5x5")]
    AvgPool5x5,
    #[serde(rename = "skip_connect")]
    SkipConnect,
    #[serde(rename = "sep_conv_3x3")]
    SepConv3x3,
    #[serde(rename = "sep_conv_5x5")]
    SepConv5x5,
    #[serde(rename = "dil_conv_3x3")]
    DilConv3x3,
    #[serde(rename = "dil_conv_5x5")]
    DilConv5x5,
    #[serde(rename = "conv_1x1")]
    Conv1x1,
    #[serde(rename = "conv_3x3")]
    Conv3x3,
    #[serde(rename = "conv_5x5")]
    Conv5x5,
    /// NAONet only: ReLU, 1×3 conv, 3×1 conv, BN.
    #[serde(rename = "conv_1x3_3x1")]
    Conv1x3_3x1,
    /// NAONet only: ReLU, 1×7 conv, 7×1 conv, BN.
    #[serde(rename = "conv_1x7_7x1")]
    Conv1x7_7x1,
    /// NAONet only.
    #[serde(rename = "avg_pool_2x2")]
    AvgPool2x2,
    /// NAONet only.
    #[serde(rename = "max_pool_2x2")]
    MaxPool2x2,
    #[serde(rename = "null")]
    Null,
}

/// The three classes NAT reasons about: O (any real op), S (skip), N (null).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum OpClass {
    Other,
    Skip,
    Null,
}

impl Op {
    /// Every operation this crate knows, in a fixed order.
    pub const ALL: [Op; 17] = [
        Op::MaxPool3x3,
        Op::MaxPool5x5,
        Op::AvgPool3x3,
        Op::AvgPool5x5,
        Op::SkipConnect,
        Op::SepConv3x3,
        Op::SepConv5x5,
        Op::DilConv3x3,
        Op::DilConv5x5,
        Op::Conv1x1,
        Op::Conv3x3,
        Op::Conv5x5,
        Op::Conv1x3_3x1,
        Op::Conv1x7_7x1,
        Op::AvgPool2x2,
        Op::MaxPool2x2,
        Op::Null,
    ];

    /// The name used by the official code (`"sep_conv_3x3"`, …).
    pub fn name(self) -> &'static str {
        match self {
            Op::MaxPool3x3 => "max_pool_3x3",
            Op::MaxPool5x5 => "max_pool_5x5",
            Op::AvgPool3x3 => "avg_pool_3x3",
            Op::AvgPool5x5 => "avg_pool_5x5",
            Op::SkipConnect => "skip_connect",
            Op::SepConv3x3 => "sep_conv_3x3",
            Op::SepConv5x5 => "sep_conv_5x5",
            Op::DilConv3x3 => "dil_conv_3x3",
            Op::DilConv5x5 => "dil_conv_5x5",
            Op::Conv1x1 => "conv_1x1",
            Op::Conv3x3 => "conv_3x3",
            Op::Conv5x5 => "conv_5x5",
            Op::Conv1x3_3x1 => "conv_1x3_3x1",
            Op::Conv1x7_7x1 => "conv_1x7_7x1",
            Op::AvgPool2x2 => "avg_pool_2x2",
            Op::MaxPool2x2 => "max_pool_2x2",
            Op::Null => "null",
        }
    }

    /// Parses an official op name; `None` for anything else.
    pub fn from_name(name: &str) -> Option<Op> {
        Op::ALL.iter().copied().find(|op| op.name() == name)
    }

    /// Short name used by the one-line text form and in pictures (`sep3`, `c3`, `max3`, …),
    /// following the notation of NAT-SPEC §7.
    pub fn short_name(self) -> &'static str {
        match self {
            Op::MaxPool3x3 => "max3",
            Op::MaxPool5x5 => "max5",
            Op::AvgPool3x3 => "avg3",
            Op::AvgPool5x5 => "avg5",
            Op::SkipConnect => "skip",
            Op::SepConv3x3 => "sep3",
            Op::SepConv5x5 => "sep5",
            Op::DilConv3x3 => "dil3",
            Op::DilConv5x5 => "dil5",
            Op::Conv1x1 => "c1",
            Op::Conv3x3 => "c3",
            Op::Conv5x5 => "c5",
            Op::Conv1x3_3x1 => "c1x3_3x1",
            Op::Conv1x7_7x1 => "c1x7_7x1",
            Op::AvgPool2x2 => "avg2",
            Op::MaxPool2x2 => "max2",
            Op::Null => "null",
        }
    }

    /// Parses an official name, a short name ([`Op::short_name`]) or DARTS' `"none"` (= null).
    /// Used by the human-facing formats (DARTS string, text form); JSON accepts official names only.
    pub fn from_name_lenient(name: &str) -> Option<Op> {
        if name == "none" {
            return Some(Op::Null);
        }
        Op::from_name(name).or_else(|| Op::ALL.iter().copied().find(|op| op.short_name() == name))
    }

    /// Kernel size of the op's spatial window (1 for skip and null; 7 for conv_1x7_7x1).
    pub fn kernel(self) -> usize {
        match self {
            Op::SkipConnect | Op::Null | Op::Conv1x1 => 1,
            Op::AvgPool2x2 | Op::MaxPool2x2 => 2,
            Op::MaxPool3x3
            | Op::AvgPool3x3
            | Op::SepConv3x3
            | Op::DilConv3x3
            | Op::Conv3x3
            | Op::Conv1x3_3x1 => 3,
            Op::MaxPool5x5 | Op::AvgPool5x5 | Op::SepConv5x5 | Op::DilConv5x5 | Op::Conv5x5 => 5,
            Op::Conv1x7_7x1 => 7,
        }
    }

    /// The NAT class of the op.
    pub fn class(self) -> OpClass {
        match self {
            Op::SkipConnect => OpClass::Skip,
            Op::Null => OpClass::Null,
            _ => OpClass::Other,
        }
    }
}

impl std::fmt::Display for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A published, ordered operation list. The policy embeds ops by their index in this list;
/// `null` is always last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OpSet {
    /// NAT `FULLY_CONCAT_PRIMITIVES` (9 ops).
    NatFullyConcat,
    /// NAT `LOOSE_END_PRIMITIVES` (9 ops).
    NatLooseEnd,
    /// NAT++ (NATv2) primitive list (13 ops).
    NatPlusPlus,
}

impl OpSet {
    /// The ops of the set, in the official order.
    pub fn ops(self) -> &'static [Op] {
        match self {
            OpSet::NatFullyConcat => &[
                Op::MaxPool3x3,
                Op::AvgPool3x3,
                Op::SkipConnect,
                Op::SepConv3x3,
                Op::SepConv5x5,
                Op::DilConv3x3,
                Op::DilConv5x5,
                Op::Conv3x3,
                Op::Null,
            ],
            OpSet::NatLooseEnd => &[
                Op::MaxPool3x3,
                Op::AvgPool3x3,
                Op::SkipConnect,
                Op::SepConv3x3,
                Op::SepConv5x5,
                Op::Conv1x1,
                Op::Conv3x3,
                Op::Conv5x5,
                Op::Null,
            ],
            OpSet::NatPlusPlus => &[
                Op::MaxPool3x3,
                Op::MaxPool5x5,
                Op::AvgPool3x3,
                Op::AvgPool5x5,
                Op::SkipConnect,
                Op::SepConv3x3,
                Op::SepConv5x5,
                Op::DilConv3x3,
                Op::DilConv5x5,
                Op::Conv1x1,
                Op::Conv3x3,
                Op::Conv5x5,
                Op::Null,
            ],
        }
    }

    /// Index of `op` in this set, if present.
    pub fn index_of(self, op: Op) -> Option<usize> {
        self.ops().iter().position(|&o| o == op)
    }

    /// Number of ops in the set (null included).
    pub fn len(self) -> usize {
        self.ops().len()
    }

    /// Always false: every set has at least `null`.
    pub fn is_empty(self) -> bool {
        false
    }

    /// Every op set, in a fixed order.
    pub const ALL: [OpSet; 3] = [
        OpSet::NatFullyConcat,
        OpSet::NatLooseEnd,
        OpSet::NatPlusPlus,
    ];

    /// Wire name (`"nat-fully-concat"`, `"nat-loose-end"`, `"nat-plus-plus"`).
    pub fn name(self) -> &'static str {
        match self {
            OpSet::NatFullyConcat => "nat-fully-concat",
            OpSet::NatLooseEnd => "nat-loose-end",
            OpSet::NatPlusPlus => "nat-plus-plus",
        }
    }

    /// Parses a wire name.
    pub fn from_name(name: &str) -> Option<OpSet> {
        OpSet::ALL.iter().copied().find(|s| s.name() == name)
    }

    /// The ops the input sampler draws from: every op except the trailing `null`.
    pub fn non_null_ops(self) -> &'static [Op] {
        let ops = self.ops();
        &ops[..ops.len() - 1]
    }
}

impl std::fmt::Display for OpSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
