//! `serve`: the tracking server, its tokens, and a clean stop on Ctrl-C or SIGTERM.

use idgraph::server::{ServeConfig, demo_may_hold_token};
use rand::RngCore;

use super::args::ServeArgs;
use super::db::Db;
use super::exit::Fail;
use super::output::say;

pub fn serve(db: &Db, args: ServeArgs) -> Result<(), Fail> {
    let ServeArgs {
        addr,
        mut keys,
        read_token,
        admin_token,
        sync,
        no_demo,
        max_request_bytes,
        max_properties,
        max_value_bytes,
        max_properties_per_id,
        max_refusals_logged,
        max_links_per_person,
        header_timeout,
        body_timeout,
        max_connections,
        shutdown_grace,
        erase_within,
        backup_dir,
        backup_every,
        backup_keep,
        client_write_rate,
        client_write_burst,
        max_connections_per_client,
        trusted_proxies,
    } = args;
    let limits = idgraph::Limits {
        max_properties,
        max_value_bytes,
        max_properties_per_id,
    };
    let demo = !no_demo;
    for (flag, t) in [
        ("--read-token", &read_token),
        ("--admin-token", &admin_token),
    ] {
        if t.as_deref() == Some("") {
            return Err(Fail::bad_input(format!(
                "{flag} must not be empty (anybody could present an empty token)"
            )));
        }
    }
    if admin_token.is_some() && admin_token == read_token {
        return Err(Fail::bad_input(
            "--admin-token must differ from --read-token (the demo page may hold the read token)",
        ));
    }
    let store = std::sync::Arc::new(db.open_rw_with(|c| {
        c.limits(limits)
            .max_refusals_logged(max_refusals_logged)
            .max_links_per_person(max_links_per_person)
    })?);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Fail::failure(format!("cannot start the async runtime: {e}")))?;
    let demo_key = keys.is_empty();
    if demo_key {
        keys.push("demo".into());
    }
    let loopback = demo_may_hold_token(addr);
    let made_token = demo && loopback && read_token.is_none();
    let read_token = read_token.or_else(|| {
        made_token.then(|| {
            let mut b = [0u8; 16];
            rand::rng().fill_bytes(&mut b);
            b.iter().map(|x| format!("{x:02x}")).collect()
        })
    });
    let cfg = ServeConfig {
        keys,
        read_token: read_token.clone(),
        admin_token: admin_token.clone(),
        sync,
        demo,
        demo_token: demo && loopback,
        max_request_bytes,
        limits,
        header_timeout,
        body_timeout,
        max_connections: max_connections as usize,
        shutdown_grace,
        erase_within: (!erase_within.is_zero()).then_some(erase_within),
        backup: backup_dir.map(|dir| idgraph::server::BackupSchedule {
            dir,
            every: backup_every.max(std::time::Duration::from_secs(1)),
            keep: backup_keep as usize,
        }),
        client_write_rate,
        client_write_burst,
        max_connections_per_client,
        trusted_proxies,
        ..ServeConfig::default()
    };
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| Fail::bad_input(format!("cannot listen on {addr}: {e}")))?;
        let local = listener
            .local_addr()
            .map_err(|e| Fail::failure(format!("cannot read the listening address: {e}")))?;
        say!(
            "idgraph listening on http://{local} (store {})",
            db.display()
        );
        if demo_key {
            say!("no --key given: accepting the API key \"demo\"");
            if !local.ip().is_loopback() {
                eprintln!(
                    "WARNING: idgraph listens on {local}, beyond this machine, and accepts the \
                     public API key \"demo\": anyone who can reach this port can write to the \
                     store. Start it with --key YOUR_KEY."
                );
            }
        }
        match (&read_token, made_token) {
            (Some(t), true) => say!("query API read token (made for the demo page): {t}"),
            (Some(_), false) => say!("query API on (bearer token from --read-token)"),
            (None, _) => say!("query API off (start with --read-token to turn it on)"),
        }
        if admin_token.is_some() {
            say!("admin API on (unalias, forget; bearer token from --admin-token)");
        }
        if demo {
            say!("demo page: http://{local}/");
        }
        if sync {
            say!("--sync: each request is acknowledged once flushed to disk");
        }
        use std::io::Write;
        let _ = std::io::stdout().flush();
        idgraph::server::serve(store, listener, cfg, shutdown_signal())
            .await
            .map_err(Fail::from)?;
        say!("idgraph stopped: everything acknowledged is flushed");
        Ok(())
    })
}

/// Completes on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
