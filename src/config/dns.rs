//! DNS discovery: the names a deployment lists in `dns = [...]`, what each
//! asks of DNS (A/AAAA at a port, or SRV giving host and port), and their
//! answers — the last good address set of each name and whether its latest
//! resolution failed.
//!
//! [`resolve`] is I/O, called by [`super::Inputs::gather_keeping`] before
//! validation and by the refresher; everything else here is pure. A name
//! that fails keeps the addresses it had (`kept`), so a DNS outage never
//! empties a pool that was serving.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

/// What one `dns` entry asks of DNS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsName {
    /// `name:port`: every A and AAAA address of `name`, at `port`.
    Host { host: String, port: u16 },
    /// `srv+_service._proto.name`: every SRV target's addresses, each at its port.
    Srv { name: String },
}

/// The prefix of an SRV entry.
const SRV: &str = "srv+";

/// Most nameservers `[dns] nameservers` may list.
pub const MAX_NAMESERVERS: usize = 8;
/// Most names one deployment's `dns` may list.
pub const MAX_DNS_NAMES: usize = 16;
/// Longest one lookup may take before it counts as failed.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);

impl DnsName {
    /// Parses an entry as written, or says why it is none.
    pub fn parse(entry: &str) -> Result<DnsName, String> {
        if let Some(name) = entry.strip_prefix(SRV) {
            if !name.starts_with('_') || !valid_host(name) {
                return Err(format!("{entry:?} is not an SRV name; expected srv+_service._tcp.name"));
            }
            return Ok(DnsName::Srv { name: name.to_string() });
        }
        let expected = || format!("{entry:?} is not a name to resolve; expected name:port or srv+_service._tcp.name");
        let (host, port) = entry.rsplit_once(':').ok_or_else(expected)?;
        let port: u16 = port.parse().ok().filter(|p| *p > 0).ok_or_else(expected)?;
        if !valid_host(host) || host.parse::<std::net::IpAddr>().is_ok() {
            return Err(expected());
        }
        Ok(DnsName::Host { host: host.to_string(), port })
    }
}

/// Letters, digits, `-`, `_` and dots, labels of 1..=63, at most 253 in all.
fn valid_host(host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host);
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// The answer in force for one name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Answer {
    /// The last good address set, sorted (empty: never resolved).
    pub addrs: Vec<SocketAddr>,
    /// Why the latest resolution failed; `None`: it gave `addrs`.
    pub error: Option<String>,
}

/// Entry as written → its answer.
pub type Answers = BTreeMap<String, Answer>;

/// Whether two answer sets give the same addresses to every name (their
/// errors aside): whether a table built from one would route as the other.
pub fn same_addresses(a: &Answers, b: &Answers) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|((na, aa), (nb, ab))| na == nb && aa.addrs == ab.addrs)
}

/// Resolves every entry of `entries` now, through `nameservers` (empty: the
/// system's, `/etc/resolv.conf`). A failed entry keeps its addresses in
/// `kept` with the error beside them. Runs on a thread of its own with its
/// own runtime, so it may be called from any thread, async or not.
pub fn resolve<'a>(entries: impl IntoIterator<Item = &'a str>, nameservers: &[SocketAddr], kept: &Answers) -> Answers {
    let names: Vec<(String, DnsName)> =
        entries.into_iter().filter_map(|entry| Some((entry.to_string(), DnsName::parse(entry).ok()?))).collect();
    if names.is_empty() {
        return Answers::new();
    }
    let nameservers = nameservers.to_vec();
    let looked_up = std::thread::spawn(move || lookup_all(&names, &nameservers)).join().unwrap_or_else(|_| Vec::new());
    looked_up
        .into_iter()
        .map(|(entry, found)| {
            let answer = match found {
                Ok(addrs) => Answer { addrs, error: None },
                Err(error) => {
                    Answer { addrs: kept.get(&entry).map(|a| a.addrs.clone()).unwrap_or_default(), error: Some(error) }
                }
            };
            (entry, answer)
        })
        .collect()
}

type Resolver = hickory_resolver::Resolver<hickory_resolver::name_server::TokioConnectionProvider>;

/// Looks every name up on a runtime of this thread's own.
fn lookup_all(
    names: &[(String, DnsName)],
    nameservers: &[SocketAddr],
) -> Vec<(String, Result<Vec<SocketAddr>, String>)> {
    let failed = |why: String| names.iter().map(|(entry, _)| (entry.clone(), Err(why.clone()))).collect();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => return failed(format!("cannot start the resolver's runtime: {e}")),
    };
    let resolver = match resolver(nameservers) {
        Ok(resolver) => resolver,
        Err(why) => return failed(why),
    };
    runtime.block_on(async {
        let mut out = Vec::with_capacity(names.len());
        for (entry, name) in names {
            out.push((entry.clone(), lookup(&resolver, name).await));
        }
        out
    })
}

/// A resolver over `nameservers` or the system's; made anew each round, so
/// no answer is cached from one round to the next.
fn resolver(nameservers: &[SocketAddr]) -> Result<Resolver, String> {
    use hickory_resolver::config::{NameServerConfig, ResolverConfig};
    use hickory_resolver::name_server::TokioConnectionProvider;
    use hickory_resolver::proto::xfer::Protocol;
    let provider = TokioConnectionProvider::default();
    let mut builder = if nameservers.is_empty() {
        Resolver::builder(provider).map_err(|e| format!("cannot read the system's resolver configuration: {e}"))?
    } else {
        let mut config = ResolverConfig::new();
        for addr in nameservers {
            config.add_name_server(NameServerConfig::new(*addr, Protocol::Udp));
            config.add_name_server(NameServerConfig::new(*addr, Protocol::Tcp));
        }
        Resolver::builder_with_config(config, provider)
    };
    let options = builder.options_mut();
    options.timeout = LOOKUP_TIMEOUT;
    options.attempts = 1;
    Ok(builder.build())
}

/// The sorted, distinct addresses of one name, or why there are none.
async fn lookup(resolver: &Resolver, name: &DnsName) -> Result<Vec<SocketAddr>, String> {
    let mut addrs = Vec::new();
    match name {
        DnsName::Host { host, port } => {
            let found = resolver.lookup_ip(host.as_str()).await.map_err(|e| e.to_string())?;
            addrs.extend(found.iter().map(|ip| SocketAddr::new(ip, *port)));
        }
        DnsName::Srv { name } => {
            let found = resolver.srv_lookup(name.as_str()).await.map_err(|e| e.to_string())?;
            for srv in found.iter() {
                let target = srv.target().to_ascii();
                let ips = resolver.lookup_ip(target.as_str()).await.map_err(|e| format!("{target}: {e}"))?;
                addrs.extend(ips.iter().map(|ip| SocketAddr::new(ip, srv.port())));
            }
        }
    }
    addrs.sort();
    addrs.dedup();
    if addrs.is_empty() {
        return Err("no addresses".to_string());
    }
    Ok(addrs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_parse_or_say_why() {
        assert_eq!(DnsName::parse("vm.svc:8428"), Ok(DnsName::Host { host: "vm.svc".into(), port: 8428 }));
        assert_eq!(DnsName::parse("srv+_vm._tcp.svc"), Ok(DnsName::Srv { name: "_vm._tcp.svc".into() }));
        for bad in ["vm.svc", "vm.svc:0", "vm.svc:99999", ":80", "127.0.0.1:80", "srv+vm.svc", "a b:80", "srv+_x..y"] {
            assert!(DnsName::parse(bad).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn same_addresses_ignores_errors() {
        let addr: SocketAddr = "127.0.0.2:80".parse().unwrap();
        let ok = Answers::from([("a:80".to_string(), Answer { addrs: vec![addr], error: None })]);
        let mut failing = ok.clone();
        failing.get_mut("a:80").unwrap().error = Some("timed out".into());
        assert!(same_addresses(&ok, &failing));
        failing.get_mut("a:80").unwrap().addrs.clear();
        assert!(!same_addresses(&ok, &failing));
    }
}
