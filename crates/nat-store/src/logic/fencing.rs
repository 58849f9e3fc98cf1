//! The fencing token of a new lease, shared by every claim statement of both backends.
//!
//! A claim sets the task's token to `old + 1 + r`, where `r` is a fresh random number of
//! [`RANDOM_BITS`] bits drawn by the database from a cryptographically strong source
//! (PostgreSQL: `gen_random_uuid()`, which reads `pg_strong_random`; SQLite ≥ 3.40: `random()`,
//! a ChaCha20 generator seeded from the OS). Tokens therefore stay positive and strictly
//! increasing per task (a report or heartbeat carrying an older token is stale), but the next
//! token of a task cannot be guessed from the current one: guessing it means guessing `r`.
//!
//! Bound: a token grows by at most 2^40 per lease, so it stays below [`RANDOM_BELOW`] (2^62) for
//! at least 2^22 (about 4 million) leases of one task, about 8 million on average. From
//! there on the random part is dropped and tokens grow by exactly 1, so `lease_token` (an `i64`)
//! cannot overflow before about 2^62 more leases of that task. No realistic task comes close: its
//! leases are bounded by `limits::MAX_ATTEMPTS` plus the reservations that were handed back
//! unused (each of which spends a token).

/// Bits of the random part of a token's increment.
pub(crate) const RANDOM_BITS: u32 = 40;

/// Tokens at or above this value grow by exactly 1 (no random part), so they never overflow.
pub(crate) const RANDOM_BELOW: i64 = 1 << 62;

/// The SQL expression of a claimed task's new token, `t.lease_token` being its current one and
/// `random` a backend's expression of a fresh uniformly random integer in `0..2^RANDOM_BITS`
/// (evaluated once per claimed row).
pub(crate) fn next_token_sql(random: &str) -> String {
    format!("t.lease_token + 1 + CASE WHEN t.lease_token < {RANDOM_BELOW} THEN {random} ELSE 0 END")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_cannot_overflow() {
        // The largest token a random increment can reach (from just below the bound) still
        // fits, with room for about 2^62 increments of 1 after it.
        let max_increment = 1i64 << RANDOM_BITS;
        let top = (RANDOM_BELOW - 1).checked_add(max_increment);
        assert!(top.is_some_and(|t| i64::MAX - t >= RANDOM_BELOW - max_increment));
        assert!(next_token_sql("r").contains(&RANDOM_BELOW.to_string()));
    }
}
