//! Serialization of a [`PolicyLearner`]: parameters, Adam state, baseline, version, counters.
//!
//! Layout: the 8 magic bytes `NATPOL01`, a little-endian `u32` header length, a JSON
//! [`CheckpointHeader`], then a safetensors blob with `param.<name>`, `adam_m.<name>` and
//! `adam_v.<name>` for every parameter name of [`crate::network::PARAM_NAMES`]. Tensors are
//! stored in the configured precision, bit for bit, so a reload reproduces the logits exactly.

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::adam::Adam;
use crate::config::PolicyConfig;
use crate::error::{PolicyError, Result};
use crate::learner::PolicyLearner;
use crate::network::{PolicyNet, PARAM_NAMES};

const MAGIC: &[u8; 8] = b"NATPOL01";

/// The JSON part of a checkpoint; readable without decoding tensors (see [`read_header`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointHeader {
    /// Network and learning configuration.
    pub config: PolicyConfig,
    /// Policy version (optimizer steps taken).
    pub version: u64,
    /// Reward baseline.
    pub baseline: f64,
    /// Adam step count (equals `version` unless restored from elsewhere).
    pub adam_step: u64,
    /// Rewards that have moved the policy.
    pub rewards_applied: u64,
    /// Samples dropped as stale.
    pub stale_dropped: u64,
}

/// Reads only the header of a checkpoint.
pub fn read_header(bytes: &[u8]) -> Result<CheckpointHeader> {
    Ok(split(bytes)?.0)
}

fn split(bytes: &[u8]) -> Result<(CheckpointHeader, &[u8])> {
    let magic = bytes
        .get(..8)
        .ok_or_else(|| PolicyError::Corrupt("shorter than the magic bytes".into()))?;
    if magic != MAGIC {
        return Err(PolicyError::Corrupt(
            "not a nat-policy checkpoint (bad magic)".into(),
        ));
    }
    let len_bytes: [u8; 4] = bytes
        .get(8..12)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| PolicyError::Corrupt("truncated header length".into()))?;
    let len = u32::from_le_bytes(len_bytes) as usize;
    let header_bytes = bytes
        .get(12..12 + len)
        .ok_or_else(|| PolicyError::Corrupt("truncated header".into()))?;
    let header: CheckpointHeader = serde_json::from_slice(header_bytes)?;
    Ok((header, &bytes[12 + len..]))
}

impl PolicyLearner {
    /// Serializes the whole learner state.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let header = CheckpointHeader {
            config: *self.config(),
            version: self.version,
            baseline: self.baseline,
            adam_step: self.adam.step,
            rewards_applied: self.rewards_applied,
            stale_dropped: self.stale_dropped,
        };
        let header = serde_json::to_vec(&header)?;
        let header_len = u32::try_from(header.len())
            .map_err(|_| PolicyError::Corrupt("header longer than 4 GiB".into()))?;
        let mut tensors: Vec<(String, Tensor)> = Vec::with_capacity(3 * PARAM_NAMES.len());
        for (i, name) in PARAM_NAMES.iter().enumerate() {
            let (Some(p), Some(m), Some(v)) = (
                self.net.params().get(i),
                self.adam.first.get(i),
                self.adam.second.get(i),
            ) else {
                return Err(PolicyError::Corrupt(format!("parameter {name} missing")));
            };
            tensors.push((format!("param.{name}"), p.as_tensor().detach()));
            tensors.push((format!("adam_m.{name}"), m.clone()));
            tensors.push((format!("adam_v.{name}"), v.clone()));
        }
        let blob = safetensors::serialize(tensors, None)
            .map_err(|e| PolicyError::Corrupt(format!("safetensors encoding: {e}")))?;
        let mut out = Vec::with_capacity(12 + header.len() + blob.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&header_len.to_le_bytes());
        out.extend_from_slice(&header);
        out.extend_from_slice(&blob);
        Ok(out)
    }

    /// Restores a learner written by [`PolicyLearner::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let (header, blob) = split(bytes)?;
        let mut tensors = candle_core::safetensors::load_buffer(blob, &Device::Cpu)
            .map_err(|e| PolicyError::Corrupt(format!("safetensors decoding: {e}")))?;
        let mut take = |key: String| {
            tensors
                .remove(&key)
                .ok_or_else(|| PolicyError::Corrupt(format!("tensor {key} missing")))
        };
        let mut params = Vec::new();
        let mut first = Vec::new();
        let mut second = Vec::new();
        for name in PARAM_NAMES {
            params.push(take(format!("param.{name}"))?);
            first.push(take(format!("adam_m.{name}"))?);
            second.push(take(format!("adam_v.{name}"))?);
        }
        if !header.baseline.is_finite() {
            return Err(PolicyError::Corrupt("baseline is not finite".into()));
        }
        let net = PolicyNet::from_tensors(header.config, params)?;
        let adam = Adam::restore(net.params(), first, second, header.adam_step)?;
        Ok(PolicyLearner {
            net,
            adam,
            baseline: header.baseline,
            version: header.version,
            rewards_applied: header.rewards_applied,
            stale_dropped: header.stale_dropped,
        })
    }

    /// Serializes as two blobs for the `policy_checkpoints` table: `params` (magic, header and
    /// parameter tensors; enough to sample and transform) and `optimizer` (a safetensors blob
    /// of the Adam moments). [`PolicyLearner::from_parts`] reverses it.
    pub fn to_parts(&self) -> Result<(Vec<u8>, Vec<u8>)> {
        let full = self.to_bytes()?;
        let (header, blob) = split(&full)?;
        let mut tensors = candle_core::safetensors::load_buffer(blob, &Device::Cpu)
            .map_err(|e| PolicyError::Corrupt(format!("safetensors decoding: {e}")))?;
        let mut params: Vec<(String, Tensor)> = Vec::new();
        let mut moments: Vec<(String, Tensor)> = Vec::new();
        for (name, tensor) in tensors.drain() {
            if name.starts_with("param.") {
                params.push((name, tensor));
            } else {
                moments.push((name, tensor));
            }
        }
        let encode = |t: Vec<(String, Tensor)>| {
            safetensors::serialize(t, None)
                .map_err(|e| PolicyError::Corrupt(format!("safetensors encoding: {e}")))
        };
        let params_blob = encode(params)?;
        let header = serde_json::to_vec(&header)?;
        let header_len = u32::try_from(header.len())
            .map_err(|_| PolicyError::Corrupt("header longer than 4 GiB".into()))?;
        let mut out = Vec::with_capacity(12 + header.len() + params_blob.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&header_len.to_le_bytes());
        out.extend_from_slice(&header);
        out.extend_from_slice(&params_blob);
        Ok((out, encode(moments)?))
    }

    /// Restores a learner from [`PolicyLearner::to_parts`]. An empty `optimizer` blob gives
    /// fresh (zero) Adam moments, e.g. for a policy imported without its optimizer.
    pub fn from_parts(params: &[u8], optimizer: &[u8]) -> Result<Self> {
        let (header, blob) = split(params)?;
        let mut tensors = candle_core::safetensors::load_buffer(blob, &Device::Cpu)
            .map_err(|e| PolicyError::Corrupt(format!("safetensors decoding: {e}")))?;
        if !optimizer.is_empty() {
            let moments = candle_core::safetensors::load_buffer(optimizer, &Device::Cpu)
                .map_err(|e| PolicyError::Corrupt(format!("optimizer state decoding: {e}")))?;
            tensors.extend(moments);
        }
        let mut take = |key: String| {
            tensors
                .remove(&key)
                .ok_or_else(|| PolicyError::Corrupt(format!("tensor {key} missing")))
        };
        let mut values = Vec::new();
        let mut first = Vec::new();
        let mut second = Vec::new();
        for name in PARAM_NAMES {
            values.push(take(format!("param.{name}"))?);
            if !optimizer.is_empty() {
                first.push(take(format!("adam_m.{name}"))?);
                second.push(take(format!("adam_v.{name}"))?);
            }
        }
        if !header.baseline.is_finite() {
            return Err(PolicyError::Corrupt("baseline is not finite".into()));
        }
        let net = PolicyNet::from_tensors(header.config, values)?;
        let adam = if optimizer.is_empty() {
            Adam::new(net.params())?
        } else {
            Adam::restore(net.params(), first, second, header.adam_step)?
        };
        Ok(PolicyLearner {
            net,
            adam,
            baseline: header.baseline,
            version: header.version,
            rewards_applied: header.rewards_applied,
            stale_dropped: header.stale_dropped,
        })
    }
}
