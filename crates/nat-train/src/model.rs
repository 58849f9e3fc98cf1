//! Networks in tch: the operations of NAT, NAT++ and NAONet ([`nat_arch::Op`]), cells built from
//! a [`nat_arch::Genotype`], the CIFAR-style evaluation [`Network`] (NAT-SPEC §1.3–1.4) with an
//! optional auxiliary head and drop-path, and the weight-sharing [`Supernet`] (§4.3).
//!
//! Parameter naming: an evaluation network lives under `<path>/net` (what is counted as its
//! size) and `<path>/aux` (the auxiliary head); a supernet under `<path>/supernet`.

mod layers;
mod network;
mod ops;
mod supernet;

pub use network::{count_params, Network, NetworkConfig, NetworkOutput};
pub use supernet::{slot_id, Supernet, SupernetConcat, SupernetConfig};
