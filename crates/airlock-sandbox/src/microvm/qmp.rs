//! A QMP client for the few commands airlock sends QEMU on its monitor socket: a claim's
//! `block_resize` (pool members) and a boot snapshot's `migrate` (the snapshot builder).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Qmp {
    /// Connect to QEMU's socket `sock`, read its greeting, enter command mode. Each answer is
    /// waited for `limit` at most.
    pub fn connect(sock: &Path, limit: Duration) -> Result<Qmp, String> {
        let stream = UnixStream::connect(sock).map_err(|e| format!("{}: {e}", sock.display()))?;
        stream
            .set_read_timeout(Some(limit))
            .and_then(|()| stream.set_write_timeout(Some(limit)))
            .map_err(|e| e.to_string())?;
        let mut qmp = Qmp {
            reader: BufReader::new(stream.try_clone().map_err(|e| e.to_string())?),
            writer: stream,
        };
        qmp.answer("greeting")?;
        qmp.execute("qmp_capabilities", serde_json::Value::Null)?;
        Ok(qmp)
    }

    /// Run `cmd` with `args` (Null: none); its `return` value, or its error.
    pub fn execute(
        &mut self,
        cmd: &str,
        args: serde_json::Value,
    ) -> Result<serde_json::Value, String> {
        let msg = if args.is_null() {
            serde_json::json!({ "execute": cmd })
        } else {
            serde_json::json!({ "execute": cmd, "arguments": args })
        };
        self.writer
            .write_all(format!("{msg}\n").as_bytes())
            .map_err(|e| format!("{cmd}: {e}"))?;
        let answer = self.answer(cmd)?;
        Ok(answer
            .get("return")
            .cloned()
            .unwrap_or(serde_json::Value::Null))
    }

    /// The next line that is not an event.
    fn answer(&mut self, what: &str) -> Result<serde_json::Value, String> {
        loop {
            let mut line = String::new();
            if self
                .reader
                .read_line(&mut line)
                .map_err(|e| format!("{what}: {e}"))?
                == 0
            {
                return Err(format!("{what}: QEMU closed the socket"));
            }
            let v: serde_json::Value =
                serde_json::from_str(&line).map_err(|e| format!("{what}: {e}: {line}"))?;
            if v.get("event").is_some() {
                continue;
            }
            if let Some(err) = v.get("error") {
                return Err(format!("{what}: {err}"));
            }
            return Ok(v);
        }
    }
}
