//! Preset architectures: every input architecture of NAT-SPEC §7 and the published NAT / NAT++
//! outputs for them, transcribed from the official `genotypes.py` files (guoyongcs/NAT and
//! guoyongcs/NATv2; DARTS_V2 also matches quark0/darts `cnn/genotypes.py`).
//!
//! Names: inputs are `darts-v2`, `enas`, `naonet`, `vgg-block`, `resnet-block`,
//! `mobilenetv2-block`, `r1`…`r5`; the outputs of NAT are `INPUT.nat` and those of NAT++
//! `INPUT.nat++` (R1–R5 have NAT outputs only). Official names (`DARTS`, `NAT_DARTS`,
//! `NATv2_DARTS`, …) are listed in [`Preset::source`].

use crate::genotype::{Cell, Genotype};
use crate::op::Op::{self, *};
use crate::transition::Space;

/// What a preset is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PresetKind {
    /// An input architecture (a NAT starting point).
    Input,
    /// The published output of a search space for the input preset `input`.
    Output {
        /// Name of the input preset.
        input: &'static str,
        /// The space that produced it (NAT or NAT++).
        space: Space,
    },
}

/// A named architecture shipped with the crate.
#[derive(Debug, Clone, Copy)]
pub struct Preset {
    /// Name used on the command line (`darts-v2`, `darts-v2.nat++`, …).
    pub name: &'static str,
    /// One-line description.
    pub description: &'static str,
    /// Where it comes from: repository, file and official variable name.
    pub source: &'static str,
    /// Input or published output.
    pub kind: PresetKind,
    build: fn() -> Genotype,
}

impl Preset {
    /// The genotype (valid; checked by the crate's tests).
    pub fn genotype(&self) -> Genotype {
        (self.build)()
    }
}

/// Builds a cell from DARTS pairs. Preset data always has an even number of pairs (checked by
/// tests); an odd count would drop nothing but yield an invalid, empty cell.
fn cell(pairs: &[(Op, usize)], concat: &[usize]) -> Cell {
    Cell::from_pairs(pairs, concat).unwrap_or(Cell {
        nodes: Vec::new(),
        concat: concat.to_vec(),
    })
}

const fn input(
    name: &'static str,
    description: &'static str,
    source: &'static str,
    build: fn() -> Genotype,
) -> Preset {
    Preset {
        name,
        description,
        source,
        kind: PresetKind::Input,
        build,
    }
}

const fn output(
    name: &'static str,
    input: &'static str,
    space: Space,
    description: &'static str,
    source: &'static str,
    build: fn() -> Genotype,
) -> Preset {
    Preset {
        name,
        description,
        source,
        kind: PresetKind::Output { input, space },
        build,
    }
}

/// Every preset, inputs first, each followed by its outputs.
pub const PRESETS: &[Preset] = &[
    input(
        "darts-v2",
        "DARTS (second order) cell, B=4",
        "quark0/darts cnn/genotypes.py DARTS_V2 = guoyongcs/NAT genotypes.py DARTS",
        darts,
    ),
    output(
        "darts-v2.nat",
        "darts-v2",
        Space::Nat,
        "NAT output for DARTS",
        "guoyongcs/NAT genotypes.py NAT_DARTS",
        nat_darts,
    ),
    output(
        "darts-v2.nat++",
        "darts-v2",
        Space::NatPlusPlus,
        "NAT++ output for DARTS",
        "guoyongcs/NATv2 genotypes.py NATv2_DARTS",
        natv2_darts,
    ),
    input(
        "enas",
        "ENAS cell, B=5 (loose-end reduce concat)",
        "guoyongcs/NAT genotypes.py ENAS",
        enas,
    ),
    output(
        "enas.nat",
        "enas",
        Space::Nat,
        "NAT output for ENAS",
        "guoyongcs/NAT genotypes.py NAT_ENAS",
        nat_enas,
    ),
    output(
        "enas.nat++",
        "enas",
        Space::NatPlusPlus,
        "NAT++ output for ENAS",
        "guoyongcs/NATv2 genotypes.py NATv2_ENAS",
        natv2_enas,
    ),
    input(
        "naonet",
        "NAONet cell, B=5 (uses NAONet-only ops)",
        "guoyongcs/NATv2 genotypes.py NAONet",
        naonet,
    ),
    output(
        "naonet.nat",
        "naonet",
        Space::Nat,
        "NAT output for NAONet (one move outside the released rules)",
        "guoyongcs/NATv2 genotypes.py NAT_NAONet",
        nat_naonet,
    ),
    output(
        "naonet.nat++",
        "naonet",
        Space::NatPlusPlus,
        "NAT++ output for NAONet (two moves outside the released table)",
        "guoyongcs/NATv2 genotypes.py NATv2_NAONet",
        natv2_naonet,
    ),
    input(
        "vgg-block",
        "VGG block as a cell: two stacked 3x3 convs, concat [5]",
        "guoyongcs/NAT genotypes.py VGG",
        vgg,
    ),
    output(
        "vgg-block.nat",
        "vgg-block",
        Space::Nat,
        "NAT output for the VGG block",
        "guoyongcs/NAT genotypes.py NAT_VGG",
        nat_vgg,
    ),
    output(
        "vgg-block.nat++",
        "vgg-block",
        Space::NatPlusPlus,
        "NAT++ output for the VGG block",
        "guoyongcs/NATv2 genotypes.py NATv2_VGG",
        natv2_vgg,
    ),
    input(
        "resnet-block",
        "ResNet basic block as a cell, concat [5]",
        "guoyongcs/NAT genotypes.py ResBlock",
        resblock,
    ),
    output(
        "resnet-block.nat",
        "resnet-block",
        Space::Nat,
        "NAT output for the ResNet block",
        "guoyongcs/NAT genotypes.py NAT_ResBlock",
        nat_resblock,
    ),
    output(
        "resnet-block.nat++",
        "resnet-block",
        Space::NatPlusPlus,
        "NAT++ output for the ResNet block",
        "guoyongcs/NATv2 genotypes.py NATv2_ResBlock",
        natv2_resblock,
    ),
    input(
        "mobilenetv2-block",
        "MobileNetV2 inverted residual block as a cell, concat [5]",
        "guoyongcs/NATv2 genotypes.py Mobilenetv2",
        mobilenetv2,
    ),
    output(
        "mobilenetv2-block.nat",
        "mobilenetv2-block",
        Space::Nat,
        "NAT output for the MobileNetV2 block",
        "guoyongcs/NATv2 genotypes.py NAT_MobileNetv2",
        nat_mobilenetv2,
    ),
    output(
        "mobilenetv2-block.nat++",
        "mobilenetv2-block",
        Space::NatPlusPlus,
        "NAT++ output for the MobileNetV2 block (same as NAT's)",
        "guoyongcs/NATv2 genotypes.py NATv2_MobileNetv2",
        natv2_mobilenetv2,
    ),
    input(
        "r1",
        "random architecture R1, B=4",
        "guoyongcs/NAT genotypes.py R1",
        r1,
    ),
    output(
        "r1.nat",
        "r1",
        Space::Nat,
        "NAT output for R1",
        "guoyongcs/NAT genotypes.py NAT_R1",
        nat_r1,
    ),
    input(
        "r2",
        "random architecture R2, B=4",
        "guoyongcs/NAT genotypes.py R2",
        r2,
    ),
    output(
        "r2.nat",
        "r2",
        Space::Nat,
        "NAT output for R2",
        "guoyongcs/NAT genotypes.py NAT_R2",
        nat_r2,
    ),
    input(
        "r3",
        "random architecture R3, B=4",
        "guoyongcs/NAT genotypes.py R3",
        r3,
    ),
    output(
        "r3.nat",
        "r3",
        Space::Nat,
        "NAT output for R3",
        "guoyongcs/NAT genotypes.py NAT_R3",
        nat_r3,
    ),
    input(
        "r4",
        "random architecture R4, B=4",
        "guoyongcs/NAT genotypes.py R4",
        r4,
    ),
    output(
        "r4.nat",
        "r4",
        Space::Nat,
        "NAT output for R4",
        "guoyongcs/NAT genotypes.py NAT_R4",
        nat_r4,
    ),
    input(
        "r5",
        "random architecture R5, B=4",
        "guoyongcs/NAT genotypes.py R5",
        r5,
    ),
    output(
        "r5.nat",
        "r5",
        Space::Nat,
        "NAT output for R5",
        "guoyongcs/NAT genotypes.py NAT_R5",
        nat_r5,
    ),
];

/// Every preset.
pub fn all() -> &'static [Preset] {
    PRESETS
}

/// The preset called `name` (case-insensitive; `_` and `-` are interchangeable).
pub fn get(name: &str) -> Option<&'static Preset> {
    let norm = |s: &str| s.trim().to_ascii_lowercase().replace('_', "-");
    let want = norm(name);
    PRESETS.iter().find(|p| norm(p.name) == want)
}

/// The published outputs for the input preset `input`.
pub fn outputs_of(input_name: &str) -> impl Iterator<Item = &'static Preset> + '_ {
    PRESETS
        .iter()
        .filter(move |p| matches!(p.kind, PresetKind::Output { input, .. } if input == input_name))
}

fn darts() -> Genotype {
    Genotype {
        normal: cell(
            &[
                (SepConv3x3, 0),
                (SepConv3x3, 1),
                (SepConv3x3, 0),
                (SepConv3x3, 1),
                (SepConv3x3, 1),
                (SkipConnect, 0),
                (SkipConnect, 0),
                (DilConv3x3, 2),
            ],
            &[2, 3, 4, 5],
        ),
        reduce: cell(
            &[
                (MaxPool3x3, 0),
                (MaxPool3x3, 1),
                (SkipConnect, 2),
                (MaxPool3x3, 1),
                (MaxPool3x3, 0),
                (SkipConnect, 2),
                (SkipConnect, 2),
                (MaxPool3x3, 1),
            ],
            &[2, 3, 4, 5],
        ),
    }
}

fn nat_darts() -> Genotype {
    Genotype {
        normal: cell(
            &[
                (SepConv3x3, 0),
                (SepConv3x3, 1),
                (SkipConnect, 0),
                (SepConv3x3, 1),
                (SkipConnect, 1),
                (SkipConnect, 0),
                (SkipConnect, 0),
                (DilConv3x3, 2),
            ],
            &[2, 3, 4, 5],
        ),
        reduce: cell(
            &[
                (MaxPool3x3, 0),
                (SkipConnect, 1),
                (SkipConnect, 2),
                (SkipConnect, 1),
                (MaxPool3x3, 0),
                (Null, 2),
                (SkipConnect, 2),
                (MaxPool3x3, 1),
            ],
            &[2, 3, 4, 5],
        ),
    }
}

fn enas() -> Genotype {
    Genotype {
        normal: cell(
            &[
                (SepConv3x3, 1),
                (SkipConnect, 1),
                (SkipConnect, 0),
                (SepConv5x5, 1),
                (AvgPool3x3, 0),
                (SepConv3x3, 1),
                (SepConv3x3, 0),
                (AvgPool3x3, 1),
                (AvgPool3x3, 0),
                (SepConv5x5, 1),
            ],
            &[2, 3, 4, 5, 6],
        ),
        reduce: cell(
            &[
                (SepConv5x5, 0),
                (AvgPool3x3, 1),
                (SepConv3x3, 1),
                (AvgPool3x3, 1),
                (AvgPool3x3, 1),
                (SepConv3x3, 1),
                (AvgPool3x3, 1),
                (SepConv5x5, 4),
                (SepConv5x5, 0),
                (SepConv3x3, 5),
            ],
            &[2, 3, 6],
        ),
    }
}

fn nat_enas() -> Genotype {
    Genotype {
        normal: cell(
            &[
                (SepConv3x3, 1),
                (SkipConnect, 1),
                (SkipConnect, 0),
                (SepConv5x5, 1),
                (Null, 0),
                (SepConv3x3, 1),
                (SepConv3x3, 0),
                (AvgPool3x3, 1),
                (AvgPool3x3, 0),
                (SepConv5x5, 1),
            ],
            &[2, 3, 4, 5, 6],
        ),
        reduce: cell(
            &[
                (SepConv5x5, 0),
                (AvgPool3x3, 1),
                (SepConv3x3, 1),
                (AvgPool3x3, 1),
                (AvgPool3x3, 1),
                (SepConv3x3, 1),
                (Null, 1),
                (SepConv5x5, 4),
                (SepConv5x5, 0),
                (SepConv3x3, 5),
            ],
            &[2, 3, 6],
        ),
    }
}

fn resblock() -> Genotype {
    Genotype {
        normal: cell(
            &[
                (Null, 0),
                (SkipConnect, 1),
                (Null, 0),
                (Conv3x3, 2),
                (Null, 0),
                (Conv3x3, 3),
                (SkipConnect, 2),
                (SkipConnect, 4),
            ],
            &[5],
        ),
        reduce: cell(
            &[
                (Null, 0),
                (SkipConnect, 1),
                (Null, 0),
                (Conv3x3, 2),
                (Null, 0),
                (Conv3x3, 3),
                (SkipConnect, 2),
                (SkipConnect, 4),
            ],
            &[5],
        ),
    }
}

fn nat_resblock() -> Genotype {
    Genotype {
        normal: cell(
            &[
                (Null, 0),
                (SkipConnect, 1),
                (SkipConnect, 0),
                (Conv3x3, 2),
                (SkipConnect, 0),
                (Conv3x3, 3),
                (SkipConnect, 2),
                (SkipConnect, 4),
            ],
            &[5],
        ),
        reduce: cell(
            &[
                (Null, 0),
                (SkipConnect, 1),
                (SkipConnect, 0),
                (Conv3x3, 2),
                (SkipConnect, 0),
                (Conv3x3, 3),
                (SkipConnect, 2),
                (SkipConnect, 4),
            ],
            &[5],
        ),
    }
}

fn vgg() -> Genotype {
    Genotype {
        normal: cell(
            &[
                (Null, 0),
                (SkipConnect, 1),
                (Null, 0),
                (Conv3x3, 2),
                (Null, 0),
                (Conv3x3, 3),
                (Null, 0),
                (SkipConnect, 4),
            ],
            &[5],
        ),
        reduce: cell(
            &[
                (Null, 0),
                (SkipConnect, 1),
                (Null, 0),
                (Conv3x3, 2),
                (Null, 0),
                (Conv3x3, 3),
                (Null, 0),
                (MaxPool3x3, 4),
            ],
            &[5],
        ),
    }
}

fn nat_vgg() -> Genotype {
    Genotype {
        normal: cell(
            &[
                (SkipConnect, 0),
                (SkipConnect, 1),
                (Null, 0),
                (Conv3x3, 2),
                (Null, 0),
                (Conv3x3, 3),
                (SkipConnect, 0),
                (SkipConnect, 4),
            ],
            &[5],
        ),
        reduce: cell(
            &[
                (SkipConnect, 0),
                (SkipConnect, 1),
                (Null, 0),
                (Conv3x3, 2),
                (Null, 0),
                (Conv3x3, 3),
                (SkipConnect, 0),
                (SkipConnect, 4),
            ],
            &[5],
        ),
    }
}

fn r1() -> Genotype {
    Genotype {
        normal: cell(
            &[
                (DilConv5x5, 1),
                (DilConv5x5, 1),
                (DilConv5x5, 1),
                (DilConv5x5, 2),
                (SepConv3x3, 0),
                (SepConv3x3, 3),
                (SkipConnect, 1),
                (MaxPool3x3, 0),
            ],
            &[2, 3, 4, 5],
        ),
        reduce: cell(
            &[
                (SepConv5x5, 0),
                (MaxPool3x3, 0),
                (SkipConnect, 0),
                (SepConv3x3, 0),
                (Conv3x3, 0),
                (MaxPool3x3, 2),
                (AvgPool3x3, 2),
                (Conv3x3, 3),
            ],
            &[2, 3, 4, 5],
        ),
    }
}

fn nat_r1() -> Genotype {
    Genotype {
        normal: cell(
            &[
                (SkipConnect, 1),
                (DilConv5x5, 1),
                (Null, 1),
                (DilConv5x5, 2),
                (SepConv3x3, 0),
                (SepConv3x3, 3),
                (SkipConnect, 1),
                (MaxPool3x3, 0),
            ],
            &[2, 3, 4, 5],
        ),
        reduce: cell(
            &[
                (SepConv5x5, 0),
                (MaxPool3x3, 0),
                (SkipConnect, 0),
                (SepConv3x3, 0),
                (SkipConnect, 0),
                (SkipConnect, 2),
                (SkipConnect, 2),
                (Conv3x3, 3),
            ],
            &[2, 3, 4, 5],
        ),
    }
}

fn r2() -> Genotype {
    Genotype {
        normal: cell(
            &[
                (MaxPool3x3, 1),
                (DilConv3x3, 0),
                (SepConv5x5, 2),
                (AvgPool3x3, 2),
                (DilConv5x5, 0),
                (SkipConnect, 3),
                (SepConv3x3, 1),
                (MaxPool3x3, 3),
            ],
            &[2, 3, 4, 5],
        ),
        reduce: cell(
            &[
                (Conv3x3, 1),
                (AvgPool3x3, 1),
                (MaxPool3x3, 0),
                (DilConv5x5, 0),
                (MaxPool3x3, 0),
                (SkipConnect, 0),
                (DilConv5x5, 4),
                (SkipConnect, 4),
            ],
            &[2, 3, 4, 5],
        ),
    }
}

fn nat_r2() -> Genotype {
    Genotype {
        normal: cell(
            &[
                (MaxPool3x3, 1),
                (DilConv3x3, 0),
                (Null, 2),
                (Null, 2),
                (DilConv5x5, 0),
                (Null, 3),
                (SepConv3x3, 1),
                (MaxPool3x3, 3),
            ],
            &[2, 3, 4, 5],
        ),
        reduce: cell(
            &[
                (SkipConnect, 1),
                (AvgPool3x3, 1),
                (SkipConnect, 0),
                (DilConv5x5, 0),
                (Null, 0),
                (SkipConnect, 0),
                (DilConv5x5, 4),
                (SkipConnect, 4),
            ],
            &[2, 3, 4, 5],
        ),
    }
}

fn r3() -> Genotype {
    Genotype {
        normal: cell(
            &[
                (Conv3x3, 0),
                (SkipConnect, 0),
                (Conv3x3, 0),
                (MaxPool3x3, 0),
                (SepConv5x5, 1),
                (SepConv3x3, 3),
                (AvgPool3x3, 4),
                (AvgPool3x3, 4),
            ],
            &[2, 3, 4, 5],
        ),
        reduce: cell(
            &[
                (SkipConnect, 0),
                (MaxPool3x3, 0),
                (SepConv5x5, 2),
                (AvgPool3x3, 0),
                (SkipConnect, 3),
                (MaxPool3x3, 2),
                (MaxPool3x3, 1),
                (SepConv5x5, 4),
            ],
            &[2, 3, 4, 5],
        ),
    }
}

fn nat_r3() -> Genotype {
    Genotype {
        normal: cell(
            &[
                (Conv3x3, 0),
                (SkipConnect, 0),
                (Null, 0),
                (MaxPool3x3, 0),
                (Null, 1),
                (Null, 3),
                (AvgPool3x3, 4),
                (Null, 4),
            ],
            &[2, 3, 4, 5],
        ),
        reduce: cell(
            &[
                (SkipConnect, 0),
                (MaxPool3x3, 0),
                (SepConv5x5, 2),
                (AvgPool3x3, 0),
                (Null, 3),
                (SkipConnect, 2),
                (MaxPool3x3, 1),
                (SepConv5x5, 4),
            ],
            &[2, 3, 4, 5],
        ),
    }
}

fn r4() -> Genotype {
    Genotype {
        normal: cell(
            &[
                (Conv3x3, 1),
                (SepConv3x3, 1),
                (Conv3x3, 2),
                (Conv3x3, 2),
                (SepConv3x3, 3),
                (Conv3x3, 0),
                (MaxPool3x3, 0),
                (MaxPool3x3, 4),
            ],
            &[2, 3, 4, 5],
        ),
        reduce: cell(
            &[
                (SepConv3x3, 0),
                (SepConv5x5, 1),
                (SkipConnect, 2),
                (SepConv3x3, 2),
                (SepConv5x5, 2),
                (Conv3x3, 1),
                (DilConv5x5, 2),
                (MaxPool3x3, 4),
            ],
            &[2, 3, 4, 5],
        ),
    }
}

fn nat_r4() -> Genotype {
    Genotype {
        normal: cell(
            &[
                (Conv3x3, 1),
                (SepConv3x3, 1),
                (SkipConnect, 2),
                (Null, 2),
                (SepConv3x3, 3),
                (Conv3x3, 0),
                (MaxPool3x3, 0),
                (Null, 4),
            ],
            &[2, 3, 4, 5],
        ),
        reduce: cell(
            &[
                (SepConv3x3, 0),
                (SepConv5x5, 1),
                (SkipConnect, 2),
                (SepConv3x3, 2),
                (SkipConnect, 2),
                (Conv3x3, 1),
                (Null, 2),
                (SkipConnect, 4),
            ],
            &[2, 3, 4, 5],
        ),
    }
}

fn r5() -> Genotype {
    Genotype {
        normal: cell(
            &[
                (SkipConnect, 0),
                (MaxPool3x3, 0),
                (MaxPool3x3, 2),
                (DilConv5x5, 0),
                (MaxPool3x3, 2),
                (Conv3x3, 2),
                (Conv3x3, 0),
                (SepConv5x5, 2),
            ],
            &[2, 3, 4, 5],
        ),
        reduce: cell(
            &[
                (DilConv5x5, 0),
                (AvgPool3x3, 1),
                (SepConv5x5, 0),
                (AvgPool3x3, 2),
                (Conv3x3, 0),
                (DilConv5x5, 0),
                (SepConv3x3, 0),
                (SkipConnect, 4),
            ],
            &[2, 3, 4, 5],
        ),
    }
}

fn nat_r5() -> Genotype {
    Genotype {
        normal: cell(
            &[
                (SkipConnect, 0),
                (MaxPool3x3, 0),
                (Null, 2),
                (DilConv5x5, 0),
                (Null, 2),
                (Conv3x3, 2),
                (Conv3x3, 0),
                (SepConv5x5, 2),
            ],
            &[2, 3, 4, 5],
        ),
        reduce: cell(
            &[
                (DilConv5x5, 0),
                (AvgPool3x3, 1),
                (SepConv5x5, 0),
                (AvgPool3x3, 2),
                (Conv3x3, 0),
                (Null, 0),
                (SkipConnect, 0),
                (SkipConnect, 4),
            ],
            &[2, 3, 4, 5],
        ),
    }
}

fn natv2_darts() -> Genotype {
    Genotype {
        normal: cell(
            &[
                (SepConv3x3, 0),
                (SepConv3x3, 1),
                (Null, 0),
                (SkipConnect, 1),
                (DilConv3x3, 1),
                (SkipConnect, 0),
                (SkipConnect, 0),
                (DilConv3x3, 2),
            ],
            &[2, 3, 4, 5],
        ),
        reduce: cell(
            &[
                (AvgPool3x3, 0),
                (MaxPool3x3, 1),
                (SkipConnect, 2),
                (SkipConnect, 1),
                (AvgPool3x3, 0),
                (SkipConnect, 2),
                (SkipConnect, 2),
                (MaxPool3x3, 1),
            ],
            &[2, 3, 4, 5],
        ),
    }
}

fn natv2_enas() -> Genotype {
    Genotype {
        normal: cell(
            &[
                (SepConv3x3, 1),
                (Null, 1),
                (SkipConnect, 0),
                (SepConv5x5, 1),
                (AvgPool3x3, 0),
                (SepConv3x3, 1),
                (SepConv3x3, 0),
                (AvgPool3x3, 1),
                (SkipConnect, 0),
                (SepConv3x3, 1),
            ],
            &[2, 3, 4, 5, 6],
        ),
        reduce: cell(
            &[
                (SepConv3x3, 0),
                (AvgPool3x3, 1),
                (SepConv3x3, 1),
                (AvgPool3x3, 1),
                (AvgPool3x3, 1),
                (AvgPool3x3, 1),
                (AvgPool3x3, 1),
                (SepConv5x5, 4),
                (SepConv5x5, 0),
                (MaxPool3x3, 5),
            ],
            &[2, 3, 6],
        ),
    }
}

fn natv2_resblock() -> Genotype {
    Genotype {
        normal: cell(
            &[
                (SkipConnect, 0),
                (SkipConnect, 1),
                (SkipConnect, 0),
                (Conv3x3, 2),
                (SkipConnect, 0),
                (Conv3x3, 3),
                (SkipConnect, 2),
                (SkipConnect, 4),
            ],
            &[5],
        ),
        reduce: cell(
            &[
                (SkipConnect, 0),
                (SkipConnect, 1),
                (SkipConnect, 0),
                (Conv3x3, 2),
                (SkipConnect, 0),
                (SepConv3x3, 3),
                (SkipConnect, 2),
                (SkipConnect, 4),
            ],
            &[5],
        ),
    }
}

fn natv2_vgg() -> Genotype {
    Genotype {
        normal: cell(
            &[
                (SkipConnect, 0),
                (SkipConnect, 1),
                (SkipConnect, 0),
                (Conv3x3, 2),
                (Null, 0),
                (SepConv3x3, 3),
                (SkipConnect, 0),
                (SkipConnect, 4),
            ],
            &[5],
        ),
        reduce: cell(
            &[
                (SkipConnect, 0),
                (SkipConnect, 1),
                (SkipConnect, 0),
                (Conv3x3, 2),
                (Null, 0),
                (SepConv3x3, 3),
                (SkipConnect, 0),
                (MaxPool3x3, 4),
            ],
            &[5],
        ),
    }
}

fn mobilenetv2() -> Genotype {
    Genotype {
        normal: cell(
            &[
                (Null, 0),
                (Conv1x1, 1),
                (Null, 0),
                (SepConv3x3, 2),
                (Null, 0),
                (Conv1x1, 3),
                (SkipConnect, 1),
                (SkipConnect, 4),
            ],
            &[5],
        ),
        reduce: cell(
            &[
                (Null, 0),
                (Conv1x1, 1),
                (Null, 0),
                (SepConv3x3, 2),
                (Null, 0),
                (Conv1x1, 3),
                (Null, 0),
                (SkipConnect, 4),
            ],
            &[5],
        ),
    }
}

fn nat_mobilenetv2() -> Genotype {
    Genotype {
        normal: cell(
            &[
                (Null, 0),
                (Conv1x1, 1),
                (Null, 0),
                (SepConv3x3, 2),
                (SkipConnect, 0),
                (Conv1x1, 3),
                (SkipConnect, 1),
                (SkipConnect, 4),
            ],
            &[5],
        ),
        reduce: cell(
            &[
                (Null, 0),
                (SkipConnect, 1),
                (SkipConnect, 0),
                (SepConv3x3, 2),
                (Null, 0),
                (Conv1x1, 3),
                (Null, 0),
                (SkipConnect, 4),
            ],
            &[5],
        ),
    }
}

fn natv2_mobilenetv2() -> Genotype {
    Genotype {
        normal: cell(
            &[
                (Null, 0),
                (Conv1x1, 1),
                (Null, 0),
                (SepConv3x3, 2),
                (SkipConnect, 0),
                (Conv1x1, 3),
                (SkipConnect, 1),
                (SkipConnect, 4),
            ],
            &[5],
        ),
        reduce: cell(
            &[
                (Null, 0),
                (SkipConnect, 1),
                (SkipConnect, 0),
                (SepConv3x3, 2),
                (Null, 0),
                (Conv1x1, 3),
                (Null, 0),
                (SkipConnect, 4),
            ],
            &[5],
        ),
    }
}

fn naonet() -> Genotype {
    Genotype {
        normal: cell(
            &[
                (Conv3x3, 0),
                (AvgPool5x5, 1),
                (Conv3x3, 1),
                (Conv1x3_3x1, 2),
                (Conv1x1, 0),
                (Conv3x3, 1),
                (Conv1x3_3x1, 0),
                (Conv3x3, 4),
                (Conv3x3, 0),
                (SkipConnect, 1),
            ],
            &[3, 5, 6],
        ),
        reduce: cell(
            &[
                (Conv3x3, 0),
                (AvgPool2x2, 1),
                (Conv1x1, 0),
                (AvgPool3x3, 0),
                (MaxPool2x2, 0),
                (Conv1x7_7x1, 1),
                (AvgPool3x3, 0),
                (Conv1x1, 2),
                (Conv3x3, 0),
                (MaxPool3x3, 1),
            ],
            &[3, 4, 5, 6],
        ),
    }
}

fn nat_naonet() -> Genotype {
    Genotype {
        normal: cell(
            &[
                (Conv3x3, 0),
                (AvgPool5x5, 1),
                (Null, 1),
                (Conv1x3_3x1, 2),
                (Conv1x1, 0),
                (SkipConnect, 1),
                (Conv1x3_3x1, 0),
                (Conv3x3, 4),
                (Conv3x3, 0),
                (SkipConnect, 1),
            ],
            &[3, 5, 6],
        ),
        reduce: cell(
            &[
                (Null, 0),
                (AvgPool3x3, 1),
                (Conv1x1, 0),
                (AvgPool3x3, 0),
                (SkipConnect, 0),
                (Conv1x7_7x1, 1),
                (AvgPool3x3, 0),
                (SkipConnect, 2),
                (Conv3x3, 0),
                (MaxPool3x3, 1),
            ],
            &[3, 4, 5, 6],
        ),
    }
}

fn natv2_naonet() -> Genotype {
    Genotype {
        normal: cell(
            &[
                (Conv3x3, 0),
                (AvgPool5x5, 1),
                (Conv3x3, 1),
                (Conv1x3_3x1, 2),
                (MaxPool3x3, 0),
                (Conv3x3, 1),
                (MaxPool3x3, 0),
                (Conv3x3, 4),
                (SepConv3x3, 0),
                (SkipConnect, 1),
            ],
            &[3, 5, 6],
        ),
        reduce: cell(
            &[
                (Conv3x3, 0),
                (SkipConnect, 1),
                (AvgPool3x3, 0),
                (AvgPool3x3, 0),
                (MaxPool2x2, 0),
                (Conv1x7_7x1, 1),
                (SkipConnect, 0),
                (SkipConnect, 2),
                (MaxPool3x3, 0),
                (MaxPool3x3, 1),
            ],
            &[3, 4, 5, 6],
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::genotype::CellKind;

    #[test]
    fn every_preset_is_valid_and_named_uniquely() {
        let mut names = std::collections::HashSet::new();
        for p in all() {
            assert!(names.insert(p.name), "duplicate {}", p.name);
            let g = p.genotype();
            assert_eq!(g.validate(), Ok(()), "{}", p.name);
            assert!(get(p.name).is_some());
            if let PresetKind::Output { input, .. } = p.kind {
                let i = get(input).expect("input preset exists");
                assert_eq!(i.kind, PresetKind::Input);
                // Outputs keep the input's wiring and concat lists; only ops change.
                let ig = i.genotype();
                for kind in CellKind::ALL {
                    let (a, b) = (ig.cell(kind), g.cell(kind));
                    assert_eq!(a.concat, b.concat, "{}", p.name);
                    let fa: Vec<_> = a.edges().map(|e| (e.1, e.2)).collect();
                    let fb: Vec<_> = b.edges().map(|e| (e.1, e.2)).collect();
                    assert_eq!(fa, fb, "{}", p.name);
                }
            }
        }
        for name in [
            "darts-v2",
            "enas",
            "naonet",
            "vgg-block",
            "resnet-block",
            "mobilenetv2-block",
            "r1",
            "r2",
            "r3",
            "r4",
            "r5",
        ] {
            assert_eq!(get(name).map(|p| p.kind), Some(PresetKind::Input), "{name}");
        }
        assert_eq!(get("DARTS_V2").map(|p| p.name), Some("darts-v2"));
        assert!(get("darts-v3").is_none());
    }

    #[test]
    fn node_counts() {
        assert_eq!(get("darts-v2").map(|p| p.genotype().num_nodes()), Some(4));
        assert_eq!(get("enas").map(|p| p.genotype().num_nodes()), Some(5));
        assert_eq!(get("naonet").map(|p| p.genotype().num_nodes()), Some(5));
        assert_eq!(outputs_of("darts-v2").count(), 2);
        assert_eq!(outputs_of("r3").count(), 1);
    }
}
