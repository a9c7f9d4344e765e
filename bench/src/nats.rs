//! A NATS JetStream cluster on loopback for `--fleet`: `nats-server` processes (Debian's
//! package), each with its own store directory, routed to each other.

use anyhow::{bail, Context, Result};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Cluster {
    _dir: tempfile::TempDir,
    pub client_ports: Vec<u16>,
    servers: Vec<Child>,
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Cluster {
    pub fn start(n: usize) -> Result<Cluster> {
        let dir = tempfile::Builder::new()
            .prefix("authenta-bench-nats-")
            .tempdir()?;
        let client_ports = (0..n).map(|_| free_port()).collect::<Result<Vec<_>>>()?;
        let routes_ports = (0..n).map(|_| free_port()).collect::<Result<Vec<_>>>()?;
        let mut servers = Vec::new();
        for i in 0..n {
            let routes: Vec<String> = routes_ports
                .iter()
                .map(|p| format!("\"nats-route://127.0.0.1:{p}\""))
                .collect();
            let config = format!(
                "server_name: n{i}\nlisten: \"127.0.0.1:{}\"\n\
                 jetstream {{ store_dir: \"{}\" }}\n\
                 cluster {{ name: bench, listen: \"127.0.0.1:{}\", routes: [{}] }}\n",
                client_ports[i],
                dir.path().join(format!("store-{i}")).display(),
                routes_ports[i],
                routes.join(", ")
            );
            let path = dir.path().join(format!("n{i}.conf"));
            std::fs::write(&path, config)?;
            let child = Command::new("nats-server")
                .arg("-c")
                .arg(&path)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("cannot start nats-server (apt-get install nats-server)")?;
            servers.push(child);
        }
        for port in &client_ports {
            let deadline = Instant::now() + Duration::from_secs(10);
            while TcpStream::connect(("127.0.0.1", *port)).is_err() {
                if Instant::now() > deadline {
                    bail!("nats-server did not listen on {port}");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(Cluster {
            _dir: dir,
            client_ports,
            servers,
        })
    }

    /// The `[fleet]` section of node `node`.
    pub fn fleet_config(&self, node: &str) -> String {
        let urls: Vec<String> = self
            .client_ports
            .iter()
            .map(|p| format!("\"nats://127.0.0.1:{p}\""))
            .collect();
        format!(
            "[fleet]\nservers = [{}]\nname = \"bench\"\nnode = \"{node}\"\nreplicas = {}\n",
            urls.join(", "),
            self.client_ports.len().min(3)
        )
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for server in &mut self.servers {
            let _ = server.kill();
            let _ = server.wait();
        }
    }
}
