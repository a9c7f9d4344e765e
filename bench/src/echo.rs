//! The baseline: a Unix-socket server in this process that does no work but move bytes.
//!
//! Thread per connection, blocking I/O: about the cheapest way to answer a frame. It reads
//! each request frame and writes back the very answer the daemon would send for it (looked
//! up by request id in the mix), so it moves the same bytes in both directions; answers to
//! requests that arrived together go out in one `write`, as the daemon does. What keyd costs
//! above this is its runtime, decoding and the verify itself.

use crate::wire::{push_frame, split_varint, FrameReader};
use crate::workload::Workload;
use anyhow::{Context, Result};
use authenta_client::proto::{self, Hello, HelloReply, PROTOCOL_VERSION};
use std::io::Write;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

/// A running echo server; stops (and removes its socket) when dropped.
pub struct EchoServer {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    accepter: Option<JoinHandle<()>>,
}

impl EchoServer {
    /// Listens at `path`, answering requests of `workload`.
    pub fn start(path: &Path, workload: Arc<Workload>) -> Result<EchoServer> {
        let listener = UnixListener::bind(path)
            .with_context(|| format!("cannot listen on {}", path.display()))?;
        let stop = Arc::new(AtomicBool::new(false));
        let accepter = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("echo-accept".into())
                .spawn(move || accept_loop(listener, workload, stop))?
        };
        Ok(EchoServer {
            path: path.to_path_buf(),
            stop,
            accepter: Some(accepter),
        })
    }

    /// Where it listens.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Wake the blocking accept so that it sees the flag.
        let _ = UnixStream::connect(&self.path);
        if let Some(accepter) = self.accepter.take() {
            let _ = accepter.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

fn accept_loop(listener: UnixListener, workload: Arc<Workload>, stop: Arc<AtomicBool>) {
    for stream in listener.incoming() {
        if stop.load(Ordering::Acquire) {
            return;
        }
        let Ok(stream) = stream else { continue };
        let workload = workload.clone();
        // Connection threads end when their client hangs up; they are not joined.
        let _ = std::thread::Builder::new()
            .name("echo-conn".into())
            .spawn(move || {
                if let Err(e) = serve(stream, &workload) {
                    // The client leaving, politely or mid-batch at the end of a run, is normal.
                    use std::io::ErrorKind::{BrokenPipe, ConnectionReset, UnexpectedEof};
                    let left = e.downcast_ref::<std::io::Error>().is_some_and(|io| {
                        matches!(io.kind(), UnexpectedEof | ConnectionReset | BrokenPipe)
                    });
                    if !left {
                        eprintln!("echo server: connection ended: {e:#}");
                    }
                }
            });
    }
}

fn serve(mut stream: UnixStream, workload: &Workload) -> Result<()> {
    let mut reader = FrameReader::default();
    let _hello: Hello = proto::decode(reader.next(&mut stream)?)?;
    let mut out = Vec::with_capacity(4096);
    push_frame(
        &mut out,
        &proto::encode(&HelloReply::Welcome {
            version: PROTOCOL_VERSION,
            server: "echo".into(),
        })?,
    );
    stream.write_all(&out)?;
    loop {
        out.clear();
        loop {
            let frame = reader.next(&mut stream)?;
            let id = leading_varint(frame).context("a request without an id")?;
            let answer = workload
                .answer_for_id(id)
                .with_context(|| format!("request id {id} is not in the mix"))?;
            push_frame(&mut out, answer);
            if !reader.has_frame() {
                break;
            }
        }
        stream.write_all(&out)?;
    }
}

/// The request id: the first field, a bincode-2 varint.
fn leading_varint(bytes: &[u8]) -> Option<u64> {
    split_varint(bytes).map(|(id, _)| id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_ids_bincode_writes() {
        for id in [0u64, 1, 250, 251, 65_535, 65_536, 1 << 40] {
            let bytes = proto::encode(&id).expect("encodes");
            assert_eq!(leading_varint(&bytes), Some(id), "{id}");
        }
    }
}
