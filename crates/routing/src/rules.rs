//! The policy rules every router kind shares: routes for the mesh live in one table (the mesh
//! table), never in `main`, and four rules per family decide between `main` and that table:
//!
//! | pref | rule                                   | effect                                        |
//! |------|----------------------------------------|-----------------------------------------------|
//! | 7470 | `lookup main suppress_prefixlength 0`  | main's non-default routes (connected subnets, uplink, LAN) win |
//! | 7471 | `lookup <mesh> suppress_prefixlength 0`| mesh routes, except defaults                   |
//! | 7472 | `lookup main`                          | the node's own uplink default, if any          |
//! | 7473 | `lookup <mesh>`                        | a default route from the mesh                  |
//!
//! An uplink node uses its own uplink, and falls back to another node's when its own default
//! route disappears; a node without an uplink uses the mesh's default.

use tollway_kernel::{Family, RouteError, Routes, Rule};

/// The priority of the first rule; the others follow it.
pub const FIRST_PRIORITY: u32 = 7470;
/// The kernel's main table.
pub const MAIN_TABLE: u32 = 254;

/// The four rules for each family, in priority order (IPv4 first).
pub fn mesh_rules(mesh_table: u32) -> Vec<Rule> {
    let mut out = Vec::with_capacity(8);
    for family in Family::BOTH {
        let rule = |offset, table, suppress| Rule {
            family,
            priority: FIRST_PRIORITY + offset,
            table,
            suppress_prefixlength: suppress,
            from: None,
            fwmark: None,
        };
        out.extend([
            rule(0, MAIN_TABLE, Some(0)),
            rule(1, mesh_table, Some(0)),
            rule(2, MAIN_TABLE, None),
            rule(3, mesh_table, None),
        ]);
    }
    out
}

/// Install the rules (each once; idempotent) and remove rules at our priorities that differ
/// from them (left by a run with another mesh table).
pub fn install(kernel: &mut dyn Routes, mesh_table: u32) -> Result<(), RouteError> {
    let want = mesh_rules(mesh_table);
    for stale in kernel.list_rules()?.into_iter().filter(|r| is_ours(r) && !want.contains(r)) {
        kernel.delete_rule(&stale)?;
    }
    for rule in &want {
        kernel.add_rule(rule)?;
    }
    Ok(())
}

/// Remove every rule at our priorities. Keeps going after a failure and returns the first.
pub fn remove(kernel: &mut dyn Routes) -> Result<(), RouteError> {
    let mut first = None;
    for rule in kernel.list_rules()?.into_iter().filter(is_ours) {
        if let Err(e) = kernel.delete_rule(&rule) {
            first.get_or_insert(e);
        }
    }
    first.map_or(Ok(()), Err)
}

fn is_ours(r: &Rule) -> bool {
    (FIRST_PRIORITY..FIRST_PRIORITY + 4).contains(&r.priority)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollway_kernel::fake::FakeRoutes;

    #[test]
    fn four_rules_per_family_main_first_and_defaults_last() {
        let rules = mesh_rules(74);
        assert_eq!(rules.len(), 8);
        for family in Family::BOTH {
            let f: Vec<_> = rules.iter().filter(|r| r.family == family).collect();
            let shape: Vec<_> = f.iter().map(|r| (r.priority, r.table, r.suppress_prefixlength)).collect();
            assert_eq!(shape, vec![(7470, 254, Some(0)), (7471, 74, Some(0)), (7472, 254, None), (7473, 74, None)]);
        }
    }

    #[test]
    fn install_is_idempotent_replaces_another_tables_rules_and_remove_leaves_others() {
        let mut k = FakeRoutes::new();
        let foreign =
            Rule { family: Family::V4, priority: 100, table: 9, suppress_prefixlength: None, from: None, fwmark: None };
        k.add_rule(&foreign).unwrap();
        install(&mut k, 7474).unwrap();
        install(&mut k, 74).unwrap();
        install(&mut k, 74).unwrap();
        let mut want = mesh_rules(74);
        want.push(foreign);
        want.sort();
        assert_eq!(k.rules(), want, "the 7474 rules were replaced, nothing duplicated");
        remove(&mut k).unwrap();
        assert_eq!(k.rules(), vec![foreign]);
    }
}
