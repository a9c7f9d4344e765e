//! A real NATS JetStream cluster on loopback for the fleet tests: `nats-server` processes
//! (Debian's package; `.ci/run` installs it), each with its own store directory, routed to
//! each other.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct NatsCluster {
    pub dir: tempfile::TempDir,
    pub client_ports: Vec<u16>,
    cluster_ports: Vec<u16>,
    /// Behind a lock so that a test can kill and restart servers while other threads use
    /// the cluster.
    servers: Mutex<Vec<Option<Child>>>,
}

/// A port free on loopback now.
pub fn free_port() -> u16 {
    free_ports(1)[0]
}

/// `n` different ports free on loopback now: each held until all are picked, since the
/// kernel may hand a port just released out again.
pub fn free_ports(n: usize) -> Vec<u16> {
    let held: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("a free port"))
        .collect();
    held.iter()
        .map(|l| l.local_addr().expect("a bound port").port())
        .collect()
}

/// Whether `nats-server` is installed; the fleet tests say so and fail without it.
pub fn nats_server_path() -> PathBuf {
    let path = std::env::var_os("NATS_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("nats-server"));
    let found = Command::new(&path)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "the fleet tests need nats-server (apt-get install nats-server, or set NATS_SERVER)"
    );
    path
}

impl NatsCluster {
    /// Starts `n` servers routed into one JetStream cluster and waits until the cluster can
    /// place a stream on all of them. Ports are picked free and then released, so another
    /// process may take one first (a server then cannot route to the others, and every
    /// replicated stream fails with "no suitable peers for placement"): such a cluster is
    /// started again on other ports.
    pub fn start(n: usize) -> NatsCluster {
        let mut logs = String::new();
        for attempt in 1..=3 {
            let started = NatsCluster::start_once(n).and_then(|cluster| {
                let ready = cluster.placement_ready(Duration::from_secs(30));
                ready.map(|()| cluster)
            });
            match started {
                Ok(cluster) => return cluster,
                Err(e) => {
                    eprintln!("nats cluster attempt {attempt} failed: {e}");
                    logs += &format!("--- attempt {attempt}: {e}\n");
                }
            }
        }
        panic!("a {n}-server nats cluster never formed:\n{logs}");
    }

    fn start_once(n: usize) -> Result<NatsCluster, String> {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut ports = free_ports(2 * n);
        let cluster_ports = ports.split_off(n);
        let client_ports = ports;
        let cluster = NatsCluster {
            dir,
            client_ports,
            cluster_ports,
            servers: Mutex::new((0..n).map(|_| None).collect()),
        };
        for i in 0..n {
            cluster.write_config(i);
            cluster.spawn_server(i)?;
        }
        Ok(cluster)
    }

    /// Waits until a stream replicated on every server can be made (and then removes it):
    /// what the daemon's first start in fleet mode needs of the cluster.
    fn placement_ready(&self, within: Duration) -> Result<(), String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let urls = self.client_urls();
        let replicas = self.client_ports.len();
        runtime.block_on(async {
            let deadline = tokio::time::Instant::now() + within;
            let client = async_nats::connect(urls.as_slice())
                .await
                .map_err(|e| e.to_string())?;
            let js = async_nats::jetstream::new(client);
            let config = async_nats::jetstream::stream::Config {
                name: "CLUSTER_PROBE".into(),
                subjects: vec!["cluster-probe".into()],
                num_replicas: replicas,
                ..Default::default()
            };
            loop {
                let last = match js.create_stream(config.clone()).await {
                    Ok(_) => {
                        return js
                            .delete_stream("CLUSTER_PROBE")
                            .await
                            .map(|_| ())
                            .map_err(|e| e.to_string())
                    }
                    Err(e) => e.to_string(),
                };
                if tokio::time::Instant::now() >= deadline {
                    return Err(last);
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    }

    fn client_urls(&self) -> Vec<String> {
        self.client_ports
            .iter()
            .map(|p| format!("nats://127.0.0.1:{p}"))
            .collect()
    }

    fn config_path(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("n{i}.conf"))
    }

    /// The server's JetStream store directory.
    pub fn store_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("store-n{i}"))
    }

    fn write_config(&self, i: usize) {
        let routes: Vec<String> = self
            .cluster_ports
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, p)| format!("\"nats-route://127.0.0.1:{p}\""))
            .collect();
        let cluster = if self.cluster_ports.len() > 1 {
            format!(
                "cluster {{ name: \"authenta-test\", listen: \"127.0.0.1:{}\", routes: [{}] }}",
                self.cluster_ports[i],
                routes.join(", ")
            )
        } else {
            String::new()
        };
        let text = format!(
            "server_name: \"n{i}\"\nlisten: \"127.0.0.1:{}\"\n\
             jetstream {{ store_dir: \"{}\", max_memory_store: 64MB, max_file_store: 1GB }}\n{cluster}\n",
            self.client_ports[i],
            self.store_dir(i).display()
        );
        std::fs::write(self.config_path(i), text).expect("write nats config");
    }

    /// Starts server `i` (again) and waits until it accepts connections.
    pub fn start_server(&self, i: usize) {
        if let Err(e) = self.spawn_server(i) {
            panic!("{e}");
        }
    }

    /// Starts server `i` and waits until it accepts connections; an error, with its log,
    /// when it exits or does not listen within 10 s.
    fn spawn_server(&self, i: usize) -> Result<(), String> {
        let log =
            std::fs::File::create(self.dir.path().join(format!("n{i}.log"))).expect("nats log");
        let child = Command::new(nats_server_path())
            .arg("-c")
            .arg(self.config_path(i))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start nats-server");
        self.servers()[i] = Some(child);
        let port = self.client_ports[i];
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            let exited = self.servers()[i]
                .as_mut()
                .and_then(|child| child.try_wait().ok().flatten());
            if let Some(status) = exited {
                return Err(format!(
                    "nats-server n{i} exited ({status}):\n{}",
                    self.log(i)
                ));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "nats-server n{i} did not listen on {port}:\n{}",
                    self.log(i)
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Kills server `i` with SIGKILL.
    pub fn kill(&self, i: usize) {
        let child = self.servers()[i].take();
        if let Some(mut child) = child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn kill_all(&self) {
        for i in 0..self.client_ports.len() {
            self.kill(i);
        }
    }

    pub fn start_all(&self) {
        for i in 0..self.client_ports.len() {
            let down = self.servers()[i].is_none();
            if down {
                self.start_server(i);
            }
        }
    }

    fn servers(&self) -> std::sync::MutexGuard<'_, Vec<Option<Child>>> {
        self.servers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The client URLs of every server, as a TOML array.
    pub fn servers_toml(&self) -> String {
        let urls: Vec<String> = self
            .client_ports
            .iter()
            .map(|p| format!("\"nats://127.0.0.1:{p}\""))
            .collect();
        format!("[{}]", urls.join(", "))
    }

    /// Server `i`'s name, as JetStream reports leaders.
    pub fn name(i: usize) -> String {
        format!("n{i}")
    }

    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("n{i}.log"))).unwrap_or_default()
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        self.kill_all();
    }
}

/// Talks to the cluster as an operator would, with the NATS client the daemon uses.
pub struct Operator {
    runtime: tokio::runtime::Runtime,
    js: async_nats::jetstream::Context,
    stream: String,
}

impl Operator {
    pub fn connect(cluster: &NatsCluster, fleet: &str) -> Operator {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let urls = cluster.client_urls();
        let js = runtime.block_on(async {
            let client = async_nats::connect(urls.as_slice())
                .await
                .expect("connect to nats");
            async_nats::jetstream::new(client)
        });
        Operator {
            runtime,
            js,
            stream: format!("AUTHENTA_{fleet}"),
        }
    }

    fn info(&self) -> async_nats::jetstream::stream::Info {
        self.runtime.block_on(async {
            let mut stream = self.js.get_stream(&self.stream).await.expect("stream");
            stream.info().await.expect("stream info").clone()
        })
    }

    /// The server leading the stream's replicas now.
    pub fn leader(&self) -> String {
        self.info()
            .cluster
            .and_then(|c| c.leader)
            .expect("the stream has a leader")
    }

    pub fn last_seq(&self) -> u64 {
        self.info().state.last_sequence
    }

    /// Keeps only the last message of every subject, as retention by subject would: the
    /// stream no longer holds the changes in between.
    pub fn compact(&self) {
        use futures_util::StreamExt;
        self.runtime.block_on(async {
            let stream = self.js.get_stream(&self.stream).await.expect("stream");
            let mut subjects = stream.info_with_subjects(">").await.expect("subjects");
            let mut names = Vec::new();
            while let Some(subject) = subjects.next().await {
                names.push(subject.expect("subject").0);
            }
            for name in names {
                stream.purge().filter(name).keep(1).await.expect("purge");
            }
        });
    }

    /// The subjects the stream takes.
    pub fn subjects(&self) -> Vec<String> {
        self.info().config.subjects
    }

    /// Makes the stream take only `subjects` (as an older version made it).
    pub fn set_subjects(&self, subjects: &[String]) {
        let mut config = self.info().config;
        config.subjects = subjects.to_vec();
        self.runtime
            .block_on(self.js.update_stream(config))
            .expect("update the stream");
    }

    /// The last message on `subject` (its sequence and payload), as someone with NATS
    /// access can read it.
    pub fn last_on(&self, subject: &str) -> (u64, Vec<u8>) {
        self.runtime.block_on(async {
            let stream = self.js.get_stream(&self.stream).await.expect("stream");
            let message = stream
                .get_last_raw_message_by_subject(subject)
                .await
                .expect("a message on the subject");
            (message.sequence, message.payload.to_vec())
        })
    }

    /// Deletes message `seq` of the stream, as someone with NATS access could.
    pub fn delete(&self, seq: u64) {
        self.runtime.block_on(async {
            let stream = self.js.get_stream(&self.stream).await.expect("stream");
            stream.delete_message(seq).await.expect("delete");
        });
    }

    /// Publishes raw bytes on a subject of the stream, as someone with NATS access could.
    pub fn publish(&self, subject: &str, payload: &[u8]) {
        self.runtime.block_on(async {
            self.js
                .publish(subject.to_owned(), payload.to_vec().into())
                .await
                .expect("publish")
                .await
                .expect("ack");
        });
    }
}
