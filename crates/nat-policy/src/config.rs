//! Policy configuration: dimensions, profile (reference vs default) and learning hyper-parameters.

use serde::{Deserialize, Serialize};

use crate::error::{PolicyError, Result};
use crate::space::ActionSpace;

/// Which behaviour set the policy follows. See the crate docs for the side-by-side table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Profile {
    /// Reproduces the official code: adjacency without self-loops or normalisation,
    /// probabilities shifted by 1e-5 after the softmax without renormalising, baseline updated
    /// with the advantage.
    Reference,
    /// Fixes the quirks: self-loops and row-normalised adjacency, exact (log-)softmax
    /// probabilities, baseline updated with the reward.
    Default,
}

impl Profile {
    /// Whether the adjacency gets self-loops and row normalisation.
    pub fn self_loops(self) -> bool {
        matches!(self, Profile::Default)
    }

    /// The constant added to each allowed probability after the softmax (not renormalised).
    pub fn probability_shift(self) -> f64 {
        match self {
            Profile::Reference => 1e-5,
            Profile::Default => 0.0,
        }
    }

    /// Whether the baseline moving average is fed the advantage (official) or the reward.
    pub fn baseline_tracks_advantage(self) -> bool {
        matches!(self, Profile::Reference)
    }
}

/// Floating-point precision of parameters and activations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// 32-bit (production).
    F32,
    /// 64-bit (gradient checks).
    F64,
}

impl Precision {
    pub(crate) fn dtype(self) -> candle_core::DType {
        match self {
            Precision::F32 => candle_core::DType::F32,
            Precision::F64 => candle_core::DType::F64,
        }
    }
}

/// Learning hyper-parameters (NAT-SPEC §4.7 defaults).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LearnConfig {
    /// Adam learning rate (3e-4).
    pub learning_rate: f64,
    /// Adam β1 (0.5).
    pub beta1: f64,
    /// Adam β2 (0.999).
    pub beta2: f64,
    /// Adam ε (1e-8, torch default).
    pub eps: f64,
    /// L2 weight decay added to the gradient, as `torch.optim.Adam(weight_decay=…)` does (5e-4).
    pub weight_decay: f64,
    /// Entropy weight of the normal cell λ_n (0.003).
    pub entropy_normal: f64,
    /// Entropy weight of the reduction cell λ_r (0.003).
    pub entropy_reduce: f64,
    /// Baseline decay γ (0.99).
    pub baseline_decay: f64,
    /// PPO clip range ε: ratios are clipped to [1-ε, 1+ε] (0.2).
    pub clip_epsilon: f64,
    /// Samples drawn more than this many versions ago are dropped, not learned from (8).
    pub max_staleness: u64,
}

impl Default for LearnConfig {
    fn default() -> Self {
        LearnConfig {
            learning_rate: 3e-4,
            beta1: 0.5,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 5e-4,
            entropy_normal: 0.003,
            entropy_reduce: 0.003,
            baseline_decay: 0.99,
            clip_epsilon: 0.2,
            max_staleness: 8,
        }
    }
}

/// Everything that defines a policy network and its learner.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// The transformation space (NAT with its op list, or NAT++).
    pub space: ActionSpace,
    /// Reference (official quirks) or default (fixed) behaviour.
    pub profile: Profile,
    /// Op embedding size E (`edge_hid`, 100); node embeddings have 2E.
    pub embed_dim: usize,
    /// Feature size F after the embedding projection (`transformer_nfeat`, 1024).
    pub feature_dim: usize,
    /// GCN hidden size G (`transformer_nhid`, 100).
    pub hidden_dim: usize,
    /// Parameter precision.
    pub precision: Precision,
    /// Learning hyper-parameters.
    pub learn: LearnConfig,
}

impl PolicyConfig {
    /// The official dimensions (E = 100, F = 1024, G = 100) for `space` and `profile`.
    pub fn new(space: ActionSpace, profile: Profile) -> Self {
        PolicyConfig {
            space,
            profile,
            embed_dim: 100,
            feature_dim: 1024,
            hidden_dim: 100,
            precision: Precision::F32,
            learn: LearnConfig::default(),
        }
    }

    /// Checks every field, naming the first bad one.
    pub fn validate(&self) -> Result<()> {
        self.space.validate()?;
        for (name, value) in [
            ("config.embed_dim", self.embed_dim),
            ("config.feature_dim", self.feature_dim),
            ("config.hidden_dim", self.hidden_dim),
        ] {
            if value == 0 || value > 1 << 16 {
                return Err(PolicyError::invalid(
                    name,
                    format!("must be in 1..=65536, got {value}"),
                ));
            }
        }
        let l = &self.learn;
        let positive = [
            ("config.learn.learning_rate", l.learning_rate),
            ("config.learn.eps", l.eps),
        ];
        for (name, value) in positive {
            if !(value.is_finite() && value > 0.0) {
                return Err(PolicyError::invalid(
                    name,
                    format!("must be > 0, got {value}"),
                ));
            }
        }
        let unit = [
            ("config.learn.beta1", l.beta1),
            ("config.learn.beta2", l.beta2),
            ("config.learn.baseline_decay", l.baseline_decay),
            ("config.learn.clip_epsilon", l.clip_epsilon),
        ];
        for (name, value) in unit {
            if !(value.is_finite() && (0.0..1.0).contains(&value)) {
                return Err(PolicyError::invalid(
                    name,
                    format!("must be in [0, 1), got {value}"),
                ));
            }
        }
        let non_negative = [
            ("config.learn.weight_decay", l.weight_decay),
            ("config.learn.entropy_normal", l.entropy_normal),
            ("config.learn.entropy_reduce", l.entropy_reduce),
        ];
        for (name, value) in non_negative {
            if !(value.is_finite() && value >= 0.0) {
                return Err(PolicyError::invalid(
                    name,
                    format!("must be >= 0, got {value}"),
                ));
            }
        }
        Ok(())
    }
}
