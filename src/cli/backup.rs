//! `backup` (of a store not in use, or `--from` a running server) and `restore`.

use std::io::{IsTerminal, Write};
use std::path::Path;

use idgraph::{BackupOptions, RestoreOptions, SuppressionList};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::args::{BackupArgs, RestoreArgs};
use super::db::Db;
use super::exit::Fail;
use super::output::{count, print_json, when};

fn bar(total: Option<u64>, prefix: &'static str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let b = ProgressBar::with_draw_target(total, ProgressDrawTarget::stderr());
    let template = if total.is_some() {
        "{prefix:>8} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}"
    } else {
        "{prefix:>8} {spinner} {bytes} {binary_bytes_per_sec} {elapsed}"
    };
    b.set_style(
        ProgressStyle::with_template(template)
            .expect("a valid template")
            .progress_chars("=> "),
    );
    b.set_prefix(prefix);
    b
}

pub fn backup(db: &Db, args: BackupArgs) -> Result<(), Fail> {
    if let Some(url) = &args.from {
        return backup_from(url, &args);
    }
    if !db.path.exists() {
        return Err(Fail::not_found(format!("no store at {}", db.display())));
    }
    let store = match db.config().open() {
        Ok(s) => s,
        Err(e @ idgraph::Error::Locked(_)) => {
            return Err(Fail::failure(format!(
                "{e}; if a server holds it, take the backup from the server: idgraph backup \
                 OUT --from http://HOST:PORT --admin-token TOKEN"
            )));
        }
        Err(e) => return Err(e.into()),
    };
    let shown = bar(None, "backup");
    let opts = BackupOptions {
        level: args.level,
        ..BackupOptions::default()
    };
    let rep = store.backup_to_file(&args.out, &opts, &|n| shown.set_position(n))?;
    shown.finish_and_clear();
    if args.json {
        print_json(&rep);
    } else {
        println!(
            "backed up {} ({} of data) into {}: {} file, cut {}",
            count(rep.entries as usize, "key"),
            indicatif::HumanBytes(rep.data_bytes),
            args.out.display(),
            indicatif::HumanBytes(rep.file_bytes),
            when(rep.taken_at)
        );
    }
    Ok(())
}

/// `backup --from URL`: `GET URL/api/admin/backup` into `OUT.partial`, checked whole (every
/// frame and the trailer), fsynced and renamed.
fn backup_from(url: &str, args: &BackupArgs) -> Result<(), Fail> {
    let token = args
        .admin_token
        .as_deref()
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            Fail::bad_input(
                "--from needs the server's admin token (--admin-token or IDGRAPH_ADMIN_TOKEN)",
            )
        })?;
    let out = &args.out;
    let shown_out = out.display().to_string();
    let io = |e| idgraph::Error::Io {
        context: shown_out.clone(),
        source: e,
    };
    if out.exists() {
        return Err(Fail::bad_input(format!(
            "{}: the backup file exists; name a new file",
            out.display()
        )));
    }
    let partial = Path::new(&format!("{}.partial", out.display())).to_path_buf();
    let shown = bar(None, "backup");
    let result = (|| -> Result<idgraph::BackupInfo, Fail> {
        let file = std::fs::File::create(&partial).map_err(io)?;
        let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
        download(url, token, &mut w, &shown)?;
        let file = w.into_inner().map_err(|e| io(e.into_error()))?;
        file.sync_all().map_err(io)?;
        let info = idgraph::check_backup(
            std::io::BufReader::new(std::fs::File::open(&partial).map_err(io)?),
            &format!("the backup received from {url}"),
        )?;
        std::fs::rename(&partial, out).map_err(io)?;
        let parent = out
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::File::open(parent)
            .and_then(|d| d.sync_all())
            .map_err(io)?;
        Ok(info)
    })();
    shown.finish_and_clear();
    if result.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    let info = result?;
    if args.json {
        print_json(&info);
    } else {
        println!(
            "backed up {} ({} of data) from {url} into {}, checked; cut {}",
            count(info.entries as usize, "key"),
            indicatif::HumanBytes(info.data_bytes),
            out.display(),
            when(info.taken_at)
        );
    }
    Ok(())
}

/// One HTTP/1.1 GET of the backup endpoint, its body written to `w` as it arrives.
fn download(url: &str, token: &str, w: &mut dyn Write, shown: &ProgressBar) -> Result<(), Fail> {
    let rest = url.strip_prefix("http://").ok_or_else(|| {
        Fail::bad_input(format!(
            "--from {url}: only http:// URLs (reach a remote server through a TLS tunnel or an \
             SSH port forward)"
        ))
    })?;
    let authority = rest.split('/').next().unwrap_or_default().to_owned();
    // A server behind a reverse proxy may live under a path.
    let path = format!(
        "{}/api/admin/backup",
        rest[authority.len()..].trim_end_matches('/')
    );
    let failed = |what: &str, e: &dyn std::fmt::Display| {
        Fail::failure(format!("backup from {url}: {what}: {e}"))
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| failed("starting the client", &e))?;
    rt.block_on(async {
        let tcp = tokio::net::TcpStream::connect(&authority)
            .await
            .map_err(|e| failed("connecting", &e))?;
        let (mut send, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
                .await
                .map_err(|e| failed("connecting", &e))?;
        tokio::spawn(conn);
        let req = hyper::Request::get(path.as_str())
            .header(hyper::header::HOST, &authority)
            .header(hyper::header::AUTHORIZATION, format!("Bearer {token}"))
            .body(http_body_util::Empty::<hyper::body::Bytes>::new())
            .map_err(|e| failed("the request", &e))?;
        let resp = send
            .send_request(req)
            .await
            .map_err(|e| failed("the request", &e))?;
        let status = resp.status();
        let mut body = resp.into_body();
        let mut received = 0u64;
        let mut reason = Vec::new();
        while let Some(frame) = std::future::poll_fn(|cx| {
            http_body::Body::poll_frame(std::pin::Pin::new(&mut body), cx)
        })
        .await
        {
            let frame = frame.map_err(|e| failed("the transfer broke off", &e))?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            if status.is_success() {
                w.write_all(&data)
                    .map_err(|e| failed("writing the file", &e))?;
                received += data.len() as u64;
                shown.set_position(received);
            } else if reason.len() < 4096 {
                reason.extend_from_slice(&data);
            }
        }
        if !status.is_success() {
            return Err(Fail::failure(format!(
                "backup from {url}: {status}: {}",
                String::from_utf8_lossy(&reason).trim()
            )));
        }
        w.flush().map_err(|e| failed("writing the file", &e))
    })
}

pub fn restore(db: &Db, args: RestoreArgs) -> Result<(), Fail> {
    let suppressions = match &args.suppressions {
        Some(p) => SuppressionList::read(p)?,
        None => None,
    };
    let opts = RestoreOptions {
        suppressions,
        verify: args.verify,
    };
    let name = args.file.display().to_string();
    let rep = if name == "-" {
        let shown = bar(None, "restore");
        let r = idgraph::restore(
            std::io::stdin().lock(),
            "standard input",
            &db.config(),
            &opts,
            &|n| shown.set_position(n),
        );
        shown.finish_and_clear();
        r?
    } else {
        let f = std::fs::File::open(&args.file).map_err(|e| idgraph::Error::Io {
            context: name.clone(),
            source: e,
        })?;
        let total = f.metadata().ok().map(|m| m.len());
        let shown = bar(total, "restore");
        let r = idgraph::restore(
            std::io::BufReader::with_capacity(1 << 20, f),
            &name,
            &db.config(),
            &opts,
            &|n| shown.set_position(n),
        );
        shown.finish_and_clear();
        r?
    };
    if args.json {
        print_json(&rep);
    } else {
        let mut extra = String::new();
        if args.suppressions.is_some() {
            extra += &format!(
                "; {} forgotten since the backup, erased",
                count(rep.forgotten as usize, "person")
            );
        }
        if rep.verified {
            extra += "; verified";
        }
        println!(
            "restored {} ({} of data, cut {}) into {}: {}{extra}",
            count(rep.entries as usize, "key"),
            indicatif::HumanBytes(rep.data_bytes),
            when(rep.taken_at),
            db.display(),
            count(rep.ids as usize, "ID"),
        );
    }
    Ok(())
}
