//! `cyrvault discover`: fill the user directory from the servers. For each server in
//! `cyrvault.conf`: connect to its `cyrvaultd`, ask `PARTITIONS` (each partition's
//! path and filesystem device, each user's INBOX partition; doc/protocol.md 2) and
//! `SHARED` (each top-level shared hierarchy, an owner `%<top>` backed up like a
//! user), map partitions to drive units (the device, or the admin's override) and
//! record it.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;

use serde::Serialize;

use super::config::{FleetConf, ServerConf};
use super::directory::{Directory, DiscoverCounts, SeenUser};
use crate::backup::{ConnectOptions, Server};
use crate::error::{Error, ErrorKind, Result};

/// What discovery found on one server (or why it could not ask).
#[derive(Debug, Serialize)]
pub struct ServerDiscovery {
    /// The server's name in the config.
    pub server: String,
    /// Drive unit → its partitions.
    pub units: BTreeMap<String, Vec<String>>,
    /// What changed in the directory.
    pub counts: DiscoverCounts,
    /// The error, when the server could not be asked (its users are left as they
    /// were), or could not list everything it holds (what it listed is recorded).
    pub error: Option<String>,
    /// The error's class (`temporary`, `config`, `permission`, `data`, ...: the exit
    /// status `cyrvault backup` gives the same failure).
    pub class: Option<ErrorKind>,
}

/// Connect to one configured server.
pub fn connect(s: &ServerConf) -> Result<Server> {
    let opts = ConnectOptions {
        servername: s.servername.clone(),
        secret: s.secret()?,
        base_only: false,
        timeout: None,
        tls: s.tls.clone(),
    };
    Ok(Server::connect(&s.address, &opts)?)
}

fn one(dir: &mut Directory, conf: &FleetConf, s: &ServerConf, now: i64) -> Result<ServerDiscovery> {
    let mut server = connect(s)?;
    if !server.has("PARTITIONS") {
        return Err(Error::refused(format!(
            "{}: {} does not announce PARTITIONS (a cyrvaultd older than the fleet?)",
            s.name, s.address
        )));
    }
    let map = server
        .client
        .partitions()
        .map_err(|e| e.in_context(&format!("{}: PARTITIONS", s.address)))?;
    let mut unit_of: BTreeMap<String, String> = BTreeMap::new();
    let mut units: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, _path, dev) in &map.partitions {
        let name = String::from_utf8_lossy(name).into_owned();
        let unit = s.unit_of(&name, *dev);
        units.entry(unit.clone()).or_default().push(name.clone());
        unit_of.insert(name, unit);
    }
    // Users, then every top-level shared hierarchy (owner `%shared`, backed up into
    // an archive of its own like a user; doc/protocol.md 2.8).
    let mut owners: Vec<(String, String)> = map
        .users
        .iter()
        .map(|(u, p)| {
            (
                String::from_utf8_lossy(u).into_owned(),
                String::from_utf8_lossy(p).into_owned(),
            )
        })
        .collect();
    // A server that cannot list shared mailboxes (no SHARED: an older cyrvaultd) has
    // its users recorded, but discovery of it fails unless the config says it has
    // no shared mailboxes to back up (`<server>_shared: no`).
    let mut unlisted = None;
    if s.shared {
        if server.has("SHARED") {
            owners.extend(server.shared_owners()?);
        } else {
            unlisted = Some(Error::server(
                ErrorKind::Config,
                format!(
                    "{}: {} cannot list shared mailboxes (it does not offer SHARED): \
                     shared (non-user) mailboxes on it, if any, are not backed up. Use a \
                     cyrvaultd that offers SHARED, or set `{}_shared: no` if the server has \
                     none",
                    s.name, s.address, s.name
                ),
            ));
        }
    }
    let mut users = Vec::with_capacity(owners.len());
    for (userid, partition) in owners {
        let unit = unit_of
            .get(&partition)
            .cloned()
            .unwrap_or_else(|| format!("partition-{partition}"));
        users.push(SeenUser {
            userid,
            partition,
            unit,
        });
    }
    let unit_list: Vec<(String, Vec<String>)> =
        units.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let vaults = conf.vaults.clone();
    let server_name = s.name.clone();
    let vault_for = move |userid: &str| -> String {
        let key = format!("{server_name}/{userid}");
        let h = crate::cyrus::crc32(key.as_bytes()) as usize;
        vaults[h % vaults.len()].display().to_string()
    };
    let counts = dir.record_discovery(&s.name, &s.address, &unit_list, &users, &vault_for, now)?;
    Ok(ServerDiscovery {
        server: s.name.clone(),
        units,
        counts,
        class: unlisted.as_ref().map(Error::kind),
        error: unlisted.map(|e| e.to_string()),
    })
}

/// Discover every server in `conf`. A server that cannot be asked is reported in its
/// slot and the others go on.
pub fn discover(dir: &mut Directory, conf: &FleetConf) -> Vec<ServerDiscovery> {
    let now = super::now_ms();
    conf.servers
        .iter()
        .map(|s| {
            one(dir, conf, s, now).unwrap_or_else(|e| ServerDiscovery {
                server: s.name.clone(),
                units: BTreeMap::new(),
                counts: DiscoverCounts::default(),
                error: Some(e.to_string()),
                class: Some(e.kind()),
            })
        })
        .collect()
}
