//! The gateway driver against real WireGuard in a network-namespace lab: a gateway host with a
//! public address in 198.51.100.0/24 runs `GatewayDriver` (inside its namespace, on a thread of
//! this test), a device host of tenant A configures plain WireGuard with `wg`, `wireguard-go`
//! and `ip` only (no code of ours) and pings its gateway address through the tunnel. Hand
//! changes (peer removed, interface deleted) are repaired by the next pass; suspend cuts the
//! device off, resume brings it back with the same key and port; deleting the tenant leaves
//! nothing of it; a foreign interface is never touched.
//!
//! Prerequisites (a missing one fails the test): root, /dev/net/tun, `wireguard-go`, `wg`, `ip`.

use berqenas_node_agent::assignment::{GatewaySpec, GatewayTenant, Lifecycle, PeerSpec};
use berqenas_node_agent::config::GatewayConfig;
use berqenas_node_agent::driver::{Change, Driver, Status};
use berqenas_node_agent::gateway::{wg::Backend, GatewayDriver};
use berqenas_tests::lab::{wg_keypair, Host, Lab};
use berqenas_tests::wait_for;
use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn require_prerequisites() {
    assert!(rustix::process::geteuid().is_root(), "the gateway lab needs root (network namespaces, tun devices)");
    assert!(Path::new("/dev/net/tun").exists(), "/dev/net/tun is missing: the gateway lab needs tun devices");
    for tool in ["wireguard-go", "wg", "ip", "ping"] {
        let found = std::process::Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(found, "{tool} is not installed (apt-get install wireguard-go wireguard-tools iproute2 iputils-ping)");
    }
}

enum Request {
    Reconcile(Vec<GatewayTenant>, mpsc::Sender<Vec<Status>>),
    Preview(Vec<GatewayTenant>, mpsc::Sender<Result<Vec<Change>, String>>),
}

/// A `GatewayDriver` living on a thread inside a lab host's network namespace: its netlink
/// sockets and the wireguard-go processes it starts are that host's.
struct NsGateway {
    tx: Option<mpsc::Sender<Request>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl NsGateway {
    fn start(host: &Host, node: GatewayConfig, data_dir: PathBuf) -> Self {
        let (tx, rx) = mpsc::channel::<Request>();
        let netns = host.netns.clone();
        let thread = std::thread::spawn(move || {
            let file = std::fs::File::open(format!("/run/netns/{netns}")).expect("open the namespace");
            rustix::thread::move_into_link_name_space(file.as_fd(), Some(rustix::thread::LinkNameSpaceType::Network))
                .expect("setns into the gateway namespace");
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            let mut driver = GatewayDriver::with_backend(node, &data_dir, Backend::Userspace);
            while let Ok(req) = rx.recv() {
                match req {
                    Request::Reconcile(desired, reply) => {
                        let _ = reply.send(rt.block_on(driver.reconcile(&desired)));
                    }
                    Request::Preview(desired, reply) => {
                        let _ = reply.send(rt.block_on(driver.preview(&desired)));
                    }
                }
            }
        });
        Self { tx: Some(tx), thread: Some(thread) }
    }

    fn reconcile(&self, desired: &[GatewayTenant]) -> Vec<Status> {
        let (reply, answer) = mpsc::channel();
        self.tx.as_ref().expect("running").send(Request::Reconcile(desired.to_vec(), reply)).expect("driver thread");
        answer.recv().expect("driver answered")
    }

    fn preview(&self, desired: &[GatewayTenant]) -> Vec<String> {
        let (reply, answer) = mpsc::channel();
        self.tx.as_ref().expect("running").send(Request::Preview(desired.to_vec(), reply)).expect("driver thread");
        answer.recv().expect("driver answered").expect("preview").iter().map(ToString::to_string).collect()
    }
}

impl Drop for NsGateway {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Deletes the lab's WireGuard links when the test ends, passed or failed: a wireguard-go process
/// exits with its link, and would otherwise keep its (deleted) namespace alive.
struct Links(Vec<(String, String)>);

impl Drop for Links {
    fn drop(&mut self) {
        for (netns, link) in &self.0 {
            let _ = std::process::Command::new("ip").args(["-n", netns, "link", "del", link]).output();
        }
    }
}

fn sh(lab: &Lab, host: &Host, program: &str, args: &[&str]) -> String {
    let out = lab.run(host, Path::new(program), args, &[]);
    assert!(
        out.status.success(),
        "{program} {} in {} failed: {}",
        args.join(" "),
        host.name,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn pings(lab: &Lab, host: &Host, target: Ipv4Addr) -> bool {
    lab.run(host, Path::new("ping"), &["-c", "1", "-W", "1", &target.to_string()], &[]).status.success()
}

fn ready(statuses: &[Status]) {
    assert!(statuses.iter().all(|s| s.ready), "every tenant ready: {statuses:?}");
}

#[test]
fn device_reaches_its_gateway_and_hand_changes_suspend_and_resume_keep_key_and_port() {
    require_prerequisites();
    let mut lab = Lab::new();
    let gw = lab.host("gw");
    let dev = lab.host("dev1");
    let public = Ipv4Addr::new(198, 51, 100, 10);
    sh(&lab, &gw, "ip", &["addr", "add", "198.51.100.10/24", "dev", "eth0"]);
    sh(&lab, &dev, "ip", &["addr", "add", "198.51.100.20/24", "dev", "eth0"]);
    // Not ours: must survive every pass.
    sh(&lab, &gw, "ip", &["link", "add", "wg0", "type", "bridge"]);
    // Interface names are unique per test process: wireguard-go's control sockets share one
    // directory across namespaces.
    let index = 1000 + std::process::id() % 9000;
    let interface = format!("bqt{index}");
    let listen_port = 51820 + index as u16;
    let tmp = tempfile::tempdir().expect("tmp");
    let node = GatewayConfig {
        public_address: public,
        public_ports: "15000-15999".parse().expect("ports"),
        protected_networks: Vec::new(),
    };
    let gateway = NsGateway::start(&gw, node, tmp.path().join("agent"));
    let dev_if = format!("bqd{}", std::process::id() % 100_000);
    let _links = Links(vec![(gw.netns.clone(), interface.clone()), (dev.netns.clone(), dev_if.clone())]);

    let (dev_private, dev_public) = wg_keypair();
    let gateway_address = Ipv4Addr::new(198, 18, 7, 1);
    let other_key = wg_keypair().1;
    let tenant = |lifecycle: Lifecycle, other_enabled: bool| GatewayTenant {
        name: "acme".into(),
        revision: 1,
        lifecycle,
        index,
        gateway: GatewaySpec {
            vpn_subnet: "198.18.7.0/24".parse().expect("cidr"),
            gateway_address,
            interface: interface.clone(),
            listen_port,
            bandwidth_bps: 0,
            device_to_device: false,
            peers: vec![
                PeerSpec {
                    id: "d1".into(),
                    name: "plc1".into(),
                    public_key: dev_public.parse().expect("key"),
                    address: Ipv4Addr::new(198, 18, 7, 10),
                    enabled: true,
                },
                PeerSpec {
                    id: "d2".into(),
                    name: "cam1".into(),
                    public_key: other_key.parse().expect("key"),
                    address: Ipv4Addr::new(198, 18, 7, 11),
                    enabled: other_enabled,
                },
            ],
            exposures: vec![],
            rules: vec![],
            blocked_domains: vec![],
        },
    };
    let running = vec![tenant(Lifecycle::Run, true)];

    let statuses = gateway.reconcile(&running);
    ready(&statuses);
    let gw_key = statuses[0].gateway.as_ref().and_then(|g| g.public_key.clone()).expect("public key reported");
    let key_file = tmp.path().join("agent/wireguard/acme.key");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&key_file).expect("key stored").permissions().mode() & 0o777, 0o600);
    assert_eq!(sh(&lab, &gw, "wg", &["show", &interface, "public-key"]), gw_key.as_str());
    assert_eq!(sh(&lab, &gw, "wg", &["show", &interface, "listen-port"]), listen_port.to_string());
    assert!(gateway.preview(&running).is_empty(), "converged after one pass: {:?}", gateway.preview(&running));

    // The device: plain WireGuard, configured the wg-quick way by hand.
    let key_path = tmp.path().join("device.key");
    std::fs::write(&key_path, format!("{dev_private}\n")).expect("device key");
    sh(&lab, &dev, "wireguard-go", &[&dev_if]);
    wait_for("the device's wireguard-go", Duration::from_secs(5), || {
        lab.run(&dev, Path::new("wg"), &["show", &dev_if], &[]).status.success().then_some(())
    });
    let endpoint = format!("{public}:{listen_port}");
    sh(
        &lab,
        &dev,
        "wg",
        &[
            "set",
            &dev_if,
            "private-key",
            key_path.to_str().expect("path"),
            "peer",
            gw_key.as_str(),
            "endpoint",
            &endpoint,
            "allowed-ips",
            "198.18.7.0/24",
            "persistent-keepalive",
            "25",
        ],
    );
    sh(&lab, &dev, "ip", &["addr", "add", "198.18.7.10/24", "dev", &dev_if]);
    sh(&lab, &dev, "ip", &["link", "set", &dev_if, "up"]);
    // A device whose session the gateway lost (peer or interface repaired) notices only when its
    // data goes unanswered: WireGuard then handshakes again after 15 s (keepalive + rekey
    // timeouts), so repairs take up to that long to be felt.
    let reach = |what: &str| {
        let deadline = Instant::now() + Duration::from_secs(40);
        while !pings(&lab, &dev, gateway_address) {
            if Instant::now() > deadline {
                let show = |h: &Host, args: &[&str]| {
                    let o = lab.run(h, Path::new(args[0]), &args[1..], &[]);
                    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
                };
                panic!(
                    "timed out: {what}\ngateway wg:\n{}\ngateway ip:\n{}\ndevice wg:\n{}\ndevice ip:\n{}",
                    show(&gw, &["wg", "show", "all"]),
                    show(&gw, &["ip", "addr"]),
                    show(&dev, &["wg", "show", "all"]),
                    show(&dev, &["ip", "addr"]),
                );
            }
        }
    };
    reach("the device pings its gateway address through the tunnel");

    // The report shows the device's session.
    let statuses = gateway.reconcile(&running);
    ready(&statuses);
    let peer = |s: &[Status]| {
        s[0].gateway
            .as_ref()
            .and_then(|g| g.peers.iter().find(|p| p.public_key.as_str() == dev_public).cloned())
            .expect("the device's peer status")
    };
    let before = peer(&statuses);
    assert!(before.last_handshake.is_some() && before.rx_bytes > 0 && before.tx_bytes > 0, "{before:?}");

    // Another device disabled: a diff, so the first device's session and counters stay.
    let one_disabled = vec![tenant(Lifecycle::Run, false)];
    assert_eq!(gateway.preview(&one_disabled).len(), 1, "{:?}", gateway.preview(&one_disabled));
    ready(&gateway.reconcile(&one_disabled));
    assert!(pings(&lab, &dev, gateway_address), "the session survives a change of other peers");
    let after = peer(&gateway.reconcile(&one_disabled));
    assert!(
        after.rx_bytes >= before.rx_bytes && after.last_handshake == before.last_handshake,
        "{before:?} → {after:?}"
    );
    let peers = sh(&lab, &gw, "wg", &["show", &interface, "peers"]);
    assert_eq!(peers, dev_public, "only enabled devices are peers");

    // A peer removed by hand is put back by the next pass.
    sh(&lab, &gw, "wg", &["set", &interface, "peer", &dev_public, "remove"]);
    assert!(!gateway.preview(&one_disabled).is_empty(), "the removed peer is drift");
    ready(&gateway.reconcile(&one_disabled));
    reach("the device reaches its gateway again after the peer was repaired");

    // The interface deleted by hand is made again with the same key and port.
    sh(&lab, &gw, "ip", &["link", "del", &interface]);
    wait_for("the gateway unreachable without its interface", Duration::from_secs(5), || {
        (!pings(&lab, &dev, gateway_address)).then_some(())
    });
    let statuses = gateway.reconcile(&one_disabled);
    ready(&statuses);
    assert_eq!(statuses[0].gateway.as_ref().and_then(|g| g.public_key.clone()), Some(gw_key.clone()));
    reach("the device reaches its gateway again after the interface was repaired");

    // Suspended: the device is cut off; interface, key and port stay.
    let suspended = vec![tenant(Lifecycle::Suspended, false)];
    ready(&gateway.reconcile(&suspended));
    assert_eq!(sh(&lab, &gw, "wg", &["show", &interface, "peers"]), "", "no peers while suspended");
    let started = Instant::now();
    assert!(
        !pings(&lab, &dev, gateway_address) && !pings(&lab, &dev, gateway_address),
        "a suspended tenant's device cannot reach its gateway"
    );
    eprintln!("suspended device refused within {:?}", started.elapsed());
    assert_eq!(sh(&lab, &gw, "wg", &["show", &interface, "public-key"]), gw_key.as_str());
    assert!(gateway.preview(&suspended).is_empty());

    // Resumed: the same key and port, reachable again.
    let statuses = gateway.reconcile(&one_disabled);
    ready(&statuses);
    assert_eq!(statuses[0].gateway.as_ref().and_then(|g| g.public_key.clone()), Some(gw_key.clone()));
    assert_eq!(sh(&lab, &gw, "wg", &["show", &interface, "listen-port"]), listen_port.to_string());
    reach("the resumed tenant's device reaches its gateway");

    // Deleted: nothing of the tenant is left; the foreign interface is untouched.
    ready(&gateway.reconcile(&[tenant(Lifecycle::Deleted, false)]));
    assert!(!lab.run(&gw, Path::new("ip"), &["link", "show", &interface], &[]).status.success(), "interface gone");
    assert!(!key_file.exists(), "key gone");
    sh(&lab, &gw, "ip", &["link", "show", "wg0"]);
    assert!(gateway.preview(&[]).is_empty());
    drop(gateway);
}
