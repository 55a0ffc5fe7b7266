//! S3-compatible backend through `object_store`. A PUT (or a completed
//! multipart upload) is atomic on S3, so an object under its key is always
//! whole; success is reported only after the upload completes.

use std::pin::Pin;
use std::sync::Arc;

use futures::stream::FuturesUnordered;
use futures::{Stream, StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, PutPayload};
use tokio::io::AsyncReadExt;

use super::{check_key, ObjectReader, Spooled, StorageError};
use crate::config::RawS3;

/// Objects up to this size go up in one PUT; larger ones in parts this big.
const PART_SIZE: usize = 8 * 1024 * 1024;

#[derive(Debug, Clone)]
pub(super) struct S3Store {
    store: Arc<dyn ObjectStore>,
    bucket: String,
    prefix: String,
}

impl S3Store {
    pub(super) fn new(bucket: &str, prefix: &str, s: &RawS3) -> Result<Self, StorageError> {
        // Environment first (AWS_ACCESS_KEY_ID, AWS_ENDPOINT, …), then the
        // config file's explicit settings.
        let mut b = AmazonS3Builder::from_env().with_bucket_name(bucket);
        if let Some(v) = &s.endpoint {
            b = b.with_endpoint(v);
        }
        if let Some(v) = &s.region {
            b = b.with_region(v);
        }
        if let Some(v) = &s.access_key_id {
            b = b.with_access_key_id(v);
        }
        if let Some(v) = &s.secret_access_key {
            b = b.with_secret_access_key(v);
        }
        if let Some(v) = s.allow_http {
            b = b.with_allow_http(v);
        }
        Ok(S3Store {
            store: Arc::new(b.build()?),
            bucket: bucket.to_owned(),
            prefix: prefix.to_owned(),
        })
    }

    pub(super) fn describe(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.prefix)
    }

    fn path(&self, key: &str) -> ObjectPath {
        if self.prefix.is_empty() {
            ObjectPath::from(key)
        } else {
            ObjectPath::from(format!("{}/{key}", self.prefix))
        }
    }

    /// A completed PUT is durable, so an object found by HEAD needs
    /// nothing more; its spool is handed back.
    pub(super) async fn commit(
        &self,
        spooled: Spooled,
        key: &str,
    ) -> Result<Option<Spooled>, StorageError> {
        let path = self.path(key);
        match self.store.head(&path).await {
            Ok(_) => return Ok(Some(spooled)),
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        let local = spooled.path().to_owned();
        let mut file = tokio::fs::File::open(&local)
            .await
            .map_err(|e| StorageError::io(&local, e))?;
        if spooled.size as usize <= PART_SIZE {
            let mut buf = Vec::with_capacity(spooled.size as usize);
            file.read_to_end(&mut buf)
                .await
                .map_err(|e| StorageError::io(&local, e))?;
            self.store.put(&path, PutPayload::from(buf)).await?;
        } else {
            self.put_multipart(&path, &mut file, &local).await?;
        }
        drop(spooled);
        Ok(None)
    }

    /// One upload per object (in parts above `PART_SIZE`, as for spooled
    /// objects), a few at a time. Content-addressed keys make a repeated
    /// upload of the same key harmless.
    pub(super) async fn place(
        &self,
        objects: Vec<(String, bytes::Bytes)>,
    ) -> Result<(), StorageError> {
        futures::stream::iter(objects)
            .map(|(key, bytes)| async move {
                let path = self.path(&key);
                if bytes.len() > PART_SIZE {
                    let mut reader = std::io::Cursor::new(bytes);
                    return self
                        .put_multipart(&path, &mut reader, std::path::Path::new(&key))
                        .await;
                }
                self.store
                    .put(&path, PutPayload::from(bytes))
                    .await
                    .map(|_| ())
                    .map_err(StorageError::from)
            })
            .buffer_unordered(8)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }

    pub(super) async fn modified(
        &self,
        key: &str,
    ) -> Result<Option<std::time::SystemTime>, StorageError> {
        match self.store.head(&self.path(key)).await {
            Ok(meta) => Ok(Some(meta.last_modified.into())),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Upload in `PART_SIZE` parts, at most two in flight. Any failure
    /// aborts the upload, so no incomplete multipart upload (invisible, but
    /// still stored and billed) is left behind in the bucket.
    async fn put_multipart(
        &self,
        path: &ObjectPath,
        file: &mut (dyn tokio::io::AsyncRead + Unpin + Send),
        local: &std::path::Path,
    ) -> Result<(), StorageError> {
        let mut upload = self.store.put_multipart(path).await?;
        let mut in_flight = FuturesUnordered::new();
        let sent: Result<(), StorageError> = async {
            loop {
                let mut part = Vec::with_capacity(PART_SIZE);
                (&mut *file)
                    .take(PART_SIZE as u64)
                    .read_to_end(&mut part)
                    .await
                    .map_err(|e| StorageError::io(local, e))?;
                if part.is_empty() {
                    break;
                }
                // Bound memory to a couple of parts in flight.
                while in_flight.len() >= 2 {
                    if let Some(result) = in_flight.next().await {
                        result?;
                    }
                }
                in_flight.push(upload.put_part(PutPayload::from(part)));
            }
            while let Some(result) = in_flight.next().await {
                result?;
            }
            Ok(())
        }
        .await;
        drop(in_flight);
        let result = match sent {
            Ok(()) => upload
                .complete()
                .await
                .map(|_| ())
                .map_err(StorageError::from),
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            if let Err(abort) = upload.abort().await {
                tracing::warn!(path = %path, error = %abort, "could not abort multipart upload");
            }
            return Err(e);
        }
        Ok(())
    }

    pub(super) async fn open_read(&self, key: &str) -> Result<ObjectReader, StorageError> {
        let result = match self.store.get(&self.path(key)).await {
            Ok(r) => r,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(StorageError::NotFound(key.to_owned()))
            }
            Err(e) => return Err(e.into()),
        };
        let stream = result
            .into_stream()
            .map_err(|e| std::io::Error::other(e.to_string()));
        Ok(Box::pin(tokio_util::io::StreamReader::new(stream)))
    }

    pub(super) async fn open_range(
        &self,
        key: &str,
        offset: u64,
        length: u64,
    ) -> Result<ObjectReader, StorageError> {
        let options = object_store::GetOptions {
            range: Some(object_store::GetRange::Bounded(offset..offset + length)),
            ..Default::default()
        };
        let result = match self.store.get_opts(&self.path(key), options).await {
            Ok(r) => r,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(StorageError::NotFound(key.to_owned()))
            }
            Err(e) => return Err(e.into()),
        };
        let stream = result
            .into_stream()
            .map_err(|e| std::io::Error::other(e.to_string()));
        Ok(Box::pin(tokio_util::io::StreamReader::new(stream)))
    }

    pub(super) async fn read_range(
        &self,
        key: &str,
        offset: u64,
        length: u64,
    ) -> Result<Vec<u8>, StorageError> {
        match self
            .store
            .get_range(&self.path(key), offset..offset + length)
            .await
        {
            Ok(bytes) => Ok(bytes.to_vec()),
            Err(object_store::Error::NotFound { .. }) => {
                Err(StorageError::NotFound(key.to_owned()))
            }
            Err(e) => Err(e.into()),
        }
    }

    pub(super) async fn delete(&self, key: &str) -> Result<(), StorageError> {
        match self.store.delete(&self.path(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    pub(super) fn keys(
        &self,
    ) -> Pin<Box<dyn Stream<Item = Result<String, StorageError>> + Send + '_>> {
        let prefix = (!self.prefix.is_empty()).then(|| ObjectPath::from(self.prefix.as_str()));
        let strip = if self.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.prefix)
        };
        // Like the local walk, yield only well-formed object keys: anything
        // else under the prefix (or in the whole bucket when there is no
        // prefix) is not ours, must not be reported as unreferenced, and
        // must not reach `delete`, which would refuse it.
        Box::pin(self.store.list(prefix.as_ref()).filter_map(move |r| {
            let item = match r {
                Ok(meta) => {
                    let full = meta.location.to_string();
                    let key = full.strip_prefix(&strip).unwrap_or(&full).to_owned();
                    check_key(&key).is_ok().then_some(Ok(key))
                }
                Err(e) => Some(Err(StorageError::from(e))),
            };
            futures::future::ready(item)
        }))
    }
}
