//! The remote AE registry table.

use sqlx::any::AnyRow;
use sqlx::Row;

use super::{Index, IndexError};
use crate::model::{AeTitle, Peer, PeerService};

/// Where a peer entry came from; config entries are rewritten at startup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerSource {
    Config,
    Api,
}

impl PeerSource {
    fn as_str(self) -> &'static str {
        match self {
            PeerSource::Config => "config",
            PeerSource::Api => "api",
        }
    }
}

fn decode(row: &AnyRow) -> Result<Peer, IndexError> {
    let ae: String = row.try_get(0)?;
    let port: i64 = row.try_get(2)?;
    let services: String = row.try_get(4)?;
    Ok(Peer {
        ae_title: AeTitle::new(&ae).map_err(|_| IndexError::Corrupt {
            column: "peers.ae_title",
            value: ae.clone(),
        })?,
        host: row.try_get(1)?,
        port: u16::try_from(port).map_err(|_| IndexError::Corrupt {
            column: "peers.port",
            value: port.to_string(),
        })?,
        tls: row.try_get::<i64, _>(3)? != 0,
        services: services.split(',').filter_map(PeerService::parse).collect(),
        worklist_charset: row.try_get(5)?,
    })
}

impl Index {
    pub async fn peers(&self) -> Result<Vec<Peer>, IndexError> {
        let rows =
            sqlx::query("SELECT ae_title, host, port, tls, services, worklist_charset FROM peers ORDER BY ae_title")
                .fetch_all(&self.pool)
                .await?;
        rows.iter().map(decode).collect()
    }

    pub async fn peer(&self, ae_title: &str) -> Result<Option<Peer>, IndexError> {
        let row = sqlx::query(
            "SELECT ae_title, host, port, tls, services, worklist_charset FROM peers \
             WHERE ae_title = $1",
        )
        .bind(ae_title)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(decode).transpose()
    }

    /// Insert or replace a peer; returns true when it was new.
    pub async fn put_peer(&self, peer: &Peer, source: PeerSource) -> Result<bool, IndexError> {
        let services: Vec<&str> = peer.services.iter().map(|s| s.as_str()).collect();
        let existed = self.peer(peer.ae_title.as_str()).await?.is_some();
        sqlx::query(
            "INSERT INTO peers (ae_title, host, port, tls, services, source, updated_at, \
             worklist_charset) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (ae_title) DO UPDATE SET host = excluded.host, port = excluded.port, \
             tls = excluded.tls, services = excluded.services, source = excluded.source, \
             updated_at = excluded.updated_at, worklist_charset = excluded.worklist_charset",
        )
        .bind(peer.ae_title.as_str())
        .bind(peer.host.as_str())
        .bind(i64::from(peer.port))
        .bind(i64::from(peer.tls))
        .bind(services.join(","))
        .bind(source.as_str())
        .bind(super::unix_now())
        .bind(peer.worklist_charset.as_str())
        .execute(&self.pool)
        .await?;
        Ok(!existed)
    }

    /// Remove a peer; returns whether it existed.
    pub async fn delete_peer(&self, ae_title: &str) -> Result<bool, IndexError> {
        let done = sqlx::query("DELETE FROM peers WHERE ae_title = $1")
            .bind(ae_title)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }
}
