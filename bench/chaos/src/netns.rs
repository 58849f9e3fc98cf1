//! The partition attack's second "host": a network namespace joined to the root namespace by a
//! veth pair with addresses 10.231.X.1 (root side, where the coordinators listen on 0.0.0.0)
//! and 10.231.X.2 (inside) on a /30. `ip link set ROOT-SIDE down` cuts every connection of the
//! processes inside; `up` heals it. Deleted on drop (the namespace and both veth ends).

use anyhow::{bail, Context};

use crate::procs::run;

#[derive(Debug)]
pub struct Netns {
    pub name: String,
    /// Root-namespace end of the veth pair.
    pub veth_root: String,
    pub veth_inside: String,
    /// The root side's address: what processes inside dial to reach the coordinators.
    pub root_addr: String,
    pub inside_addr: String,
    created: bool,
}

impl Netns {
    /// Creates the namespace and the link. Needs root and `ip` (iproute2).
    pub fn create() -> anyhow::Result<Netns> {
        if !crate::pg::running_as_root() {
            bail!("the partition attack needs root (ip netns add, veth pairs); run as root or pass --skip partition");
        }
        if !crate::pg::on_path("ip") {
            bail!("`ip` (iproute2) is missing: the partition attack needs it (apt-get install iproute2) or pass --skip partition");
        }
        let id = std::process::id();
        let subnet = (id % 63) * 4;
        let octet = (id / 63) % 250;
        let mut ns = Netns {
            name: format!("natchaos{id}"),
            veth_root: format!("ncr{}", id % 1_000_000),
            veth_inside: format!("nci{}", id % 1_000_000),
            root_addr: format!("10.231.{octet}.{}", subnet + 1),
            inside_addr: format!("10.231.{octet}.{}", subnet + 2),
            created: false,
        };
        // Leftovers of an earlier run with the same pid (a kill -9 of the harness).
        ns.delete();
        run("ip", &["netns", "add", &ns.name]).context("ip netns add")?;
        ns.created = true;
        let root_cidr = format!("{}/30", ns.root_addr);
        let inside_cidr = format!("{}/30", ns.inside_addr);
        run(
            "ip",
            &[
                "link",
                "add",
                &ns.veth_root,
                "type",
                "veth",
                "peer",
                "name",
                &ns.veth_inside,
            ],
        )?;
        run("ip", &["link", "set", &ns.veth_inside, "netns", &ns.name])?;
        run("ip", &["addr", "add", &root_cidr, "dev", &ns.veth_root])?;
        run("ip", &["link", "set", &ns.veth_root, "up"])?;
        ns.exec(&["ip", "addr", "add", &inside_cidr, "dev", &ns.veth_inside])?;
        ns.exec(&["ip", "link", "set", &ns.veth_inside, "up"])?;
        ns.exec(&["ip", "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    fn exec(&self, argv: &[&str]) -> anyhow::Result<String> {
        let mut args = vec!["netns", "exec", &self.name];
        args.extend_from_slice(argv);
        run("ip", &args)
    }

    /// `ip netns exec NAME` + `argv`: how a child is started inside.
    pub fn wrap(&self, argv: Vec<String>) -> Vec<String> {
        let mut v = vec![
            "ip".to_string(),
            "netns".into(),
            "exec".into(),
            self.name.clone(),
        ];
        v.extend(argv);
        v
    }

    /// Cuts the link (packets in flight are lost; TCP connections hang until healed).
    pub fn cut(&self) -> anyhow::Result<()> {
        run("ip", &["link", "set", &self.veth_root, "down"]).map(|_| ())
    }

    pub fn heal(&self) -> anyhow::Result<()> {
        run("ip", &["link", "set", &self.veth_root, "up"]).map(|_| ())
    }

    /// Deletes the namespace (which destroys the veth pair) and the root end if it is left.
    pub fn delete(&mut self) {
        let _ = run("ip", &["netns", "del", &self.name]);
        let _ = run("ip", &["link", "del", &self.veth_root]);
        self.created = false;
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if self.created {
            self.delete();
        }
    }
}
