//! Checking input and output genotypes against the action space, and building the 0/1 masks
//! the distribution code consumes.

use nat_arch::{Cell, Genotype};

use crate::error::{PolicyError, Result};
use crate::space::ActionSpace;

/// Largest number of intermediate nodes accepted in a cell (keeps tensors bounded).
pub const MAX_NODES: usize = 64;

/// Checks that `genotype` can be fed to the policy: every cell has 1..=64 nodes, every edge comes
/// from an earlier node and carries an op of the space's op list. `field` prefixes error paths.
pub fn validate_input(space: ActionSpace, genotype: &Genotype, field: &str) -> Result<()> {
    validate_cell(space, &genotype.normal, &format!("{field}.normal"))?;
    validate_cell(space, &genotype.reduce, &format!("{field}.reduce"))
}

fn validate_cell(space: ActionSpace, cell: &Cell, field: &str) -> Result<()> {
    if cell.nodes.is_empty() || cell.nodes.len() > MAX_NODES {
        return Err(PolicyError::invalid(
            format!("{field}.nodes"),
            format!("must hold 1..={MAX_NODES} nodes, got {}", cell.nodes.len()),
        ));
    }
    let op_set = space.op_set();
    for (i, node) in cell.nodes.iter().enumerate() {
        for (j, edge) in node.inputs.iter().enumerate() {
            let edge_field = format!("{field}.nodes[{i}].inputs[{j}]");
            if edge.from >= i + 2 {
                return Err(PolicyError::invalid(
                    format!("{edge_field}.from"),
                    format!(
                        "node {} can only read nodes 0..={}, got {}",
                        i + 2,
                        i + 1,
                        edge.from
                    ),
                ));
            }
            if op_set.index_of(edge.op).is_none() {
                return Err(PolicyError::invalid(
                    format!("{edge_field}.op"),
                    format!("{} is not in the op list {op_set:?}", edge.op),
                ));
            }
        }
    }
    Ok(())
}

/// Checks that `alpha` is reachable from the (valid) input `beta` in one transformation: same
/// wiring, and every edge's op an allowed target of the input op.
pub fn validate_output(
    space: ActionSpace,
    beta: &Genotype,
    alpha: &Genotype,
    field: &str,
) -> Result<()> {
    for (name, b, a) in [
        ("normal", &beta.normal, &alpha.normal),
        ("reduce", &beta.reduce, &alpha.reduce),
    ] {
        if a.nodes.len() != b.nodes.len() {
            return Err(PolicyError::invalid(
                format!("{field}.{name}.nodes"),
                format!(
                    "has {} nodes, the input has {}",
                    a.nodes.len(),
                    b.nodes.len()
                ),
            ));
        }
        for (i, (na, nb)) in a.nodes.iter().zip(&b.nodes).enumerate() {
            for (j, (ea, eb)) in na.inputs.iter().zip(&nb.inputs).enumerate() {
                let edge_field = format!("{field}.{name}.nodes[{i}].inputs[{j}]");
                if ea.from != eb.from {
                    return Err(PolicyError::invalid(
                        format!("{edge_field}.from"),
                        format!(
                            "a transformation keeps the wiring: input reads {}, output {}",
                            eb.from, ea.from
                        ),
                    ));
                }
                if space.actions_for(eb.op, ea.op).is_empty() {
                    return Err(PolicyError::invalid(
                        format!("{edge_field}.op"),
                        format!("{} cannot become {} in {space:?}", eb.op, ea.op),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Row-major `(2B, K)` 0/1 mask of allowed actions for every edge of `cell`.
pub(crate) fn allowed_mask(space: ActionSpace, cell: &Cell, out: &mut Vec<f64>) {
    for (op, _, _) in cell.edges() {
        out.extend(
            space
                .mask(op)
                .into_iter()
                .map(|m| if m { 1.0 } else { 0.0 }),
        );
    }
}

/// Row-major `(2B, K)` 0/1 mask of the actions that turn each input edge into the output edge.
pub(crate) fn selected_mask(space: ActionSpace, input: &Cell, output: &Cell, out: &mut Vec<f64>) {
    let k = space.num_actions();
    for ((op_in, _, _), (op_out, _, _)) in input.edges().zip(output.edges()) {
        let start = out.len();
        out.resize(start + k, 0.0);
        for a in space.actions_for(op_in, op_out) {
            if let Some(slot) = out.get_mut(start + a) {
                *slot = 1.0;
            }
        }
    }
}
