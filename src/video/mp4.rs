//! An ISO base media file (MP4, ISO/IEC 14496-12 and -15) holding one AVC
//! track: `ftyp`, then `moov` with the sample tables, then `mdat`, so a
//! browser can start playing before it has the whole file.

/// One coded picture, in decode order.
pub(super) struct Sample {
    /// Length-prefixed NAL units (4-byte lengths).
    pub data: Vec<u8>,
    pub sync: bool,
    /// Presentation minus decode time, in frame durations (never negative).
    pub composition_offset: u32,
}

pub(super) struct Track<'a> {
    pub width: u16,
    pub height: u16,
    /// Ticks of [`TIMESCALE`] per frame.
    pub frame_ticks: u32,
    pub sps: &'a [u8],
    pub pps: &'a [u8],
    /// Frames shown before the first sample's presentation, skipped by
    /// the edit list.
    pub delay_frames: u32,
}

/// Media time units per second (90 kHz, as MPEG streams count).
pub(super) const TIMESCALE: u32 = 90_000;

pub(super) fn write(track: &Track<'_>, samples: &[Sample]) -> Vec<u8> {
    let ftyp = boxed(
        b"ftyp",
        &[
            b"isom",
            &512u32.to_be_bytes()[..],
            b"isom",
            b"iso2",
            b"avc1",
            b"mp41",
        ]
        .concat(),
    );
    let payload: usize = samples.iter().map(|s| s.data.len()).sum();
    // The chunk offset depends on the size of `moov`, which does not depend
    // on the offset's value: write it once to learn its size.
    let wide = (payload as u64) + 1024 * 1024 > u64::from(u32::MAX);
    let probe = moov(track, samples, 0, wide);
    let data_at = (ftyp.len() + probe.len() + mdat_header(payload, wide).len()) as u64;
    let moov = moov(track, samples, data_at, wide);
    let mut out = Vec::with_capacity(data_at as usize + payload);
    out.extend_from_slice(&ftyp);
    out.extend_from_slice(&moov);
    out.extend_from_slice(&mdat_header(payload, wide));
    for s in samples {
        out.extend_from_slice(&s.data);
    }
    out
}

fn mdat_header(payload: usize, wide: bool) -> Vec<u8> {
    if wide {
        [
            &1u32.to_be_bytes()[..],
            b"mdat",
            &(payload as u64 + 16).to_be_bytes(),
        ]
        .concat()
    } else {
        [&(payload as u32 + 8).to_be_bytes()[..], b"mdat"].concat()
    }
}

fn boxed(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 8);
    out.extend_from_slice(&((body.len() + 8) as u32).to_be_bytes());
    out.extend_from_slice(kind);
    out.extend_from_slice(body);
    out
}

/// A full box: version 0 and `flags`.
fn full(kind: &[u8; 4], flags: u32, body: &[u8]) -> Vec<u8> {
    boxed(kind, &[&flags.to_be_bytes()[..], body].concat())
}

const MATRIX: [u32; 9] = [0x0001_0000, 0, 0, 0, 0x0001_0000, 0, 0, 0, 0x4000_0000];

fn be32(values: &[u32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_be_bytes()).collect()
}

fn moov(track: &Track<'_>, samples: &[Sample], data_at: u64, wide: bool) -> Vec<u8> {
    let count = samples.len() as u32;
    let media_duration = u64::from(count) * u64::from(track.frame_ticks);
    let movie_duration = (media_duration * 1000 / u64::from(TIMESCALE)) as u32;
    let mvhd = full(
        b"mvhd",
        0,
        &[
            be32(&[0, 0, 1000, movie_duration, 0x0001_0000]),
            vec![1, 0, 0, 0],
            be32(&[0, 0]),
            be32(&MATRIX),
            be32(&[0; 6]),
            be32(&[2]),
        ]
        .concat(),
    );
    let tkhd = full(
        b"tkhd",
        3,
        &[
            be32(&[0, 0, 1, 0, movie_duration, 0, 0]),
            vec![0, 0, 0, 0, 0, 0, 0, 0],
            be32(&MATRIX),
            be32(&[u32::from(track.width) << 16, u32::from(track.height) << 16]),
        ]
        .concat(),
    );
    let edts = boxed(
        b"edts",
        &full(
            b"elst",
            0,
            &be32(&[
                1,
                movie_duration,
                track.delay_frames.saturating_mul(track.frame_ticks),
                0x0001_0000,
            ]),
        ),
    );
    let mdhd = full(
        b"mdhd",
        0,
        &[
            be32(&[0, 0, TIMESCALE, media_duration as u32]),
            vec![0x55, 0xc4, 0, 0],
        ]
        .concat(),
    );
    let hdlr = full(
        b"hdlr",
        0,
        &[
            &be32(&[0])[..],
            b"vide",
            &be32(&[0, 0, 0]),
            b"Tessera video\0",
        ]
        .concat(),
    );
    let vmhd = full(b"vmhd", 1, &[0; 8]);
    let dinf = boxed(
        b"dinf",
        &full(
            b"dref",
            0,
            &[&be32(&[1])[..], &full(b"url ", 1, &[])].concat(),
        ),
    );
    let stbl = boxed(
        b"stbl",
        &[
            full(b"stsd", 0, &[&be32(&[1])[..], &avc1(track)].concat()),
            full(b"stts", 0, &be32(&[1, count, track.frame_ticks])),
            composition_offsets(samples, track.frame_ticks),
            sync_samples(samples),
            full(b"stsc", 0, &be32(&[1, 1, count, 1])),
            full(
                b"stsz",
                0,
                &[
                    be32(&[0, count]),
                    be32(
                        &samples
                            .iter()
                            .map(|s| s.data.len() as u32)
                            .collect::<Vec<_>>(),
                    ),
                ]
                .concat(),
            ),
            if wide {
                full(
                    b"co64",
                    0,
                    &[&be32(&[1])[..], &data_at.to_be_bytes()].concat(),
                )
            } else {
                full(b"stco", 0, &be32(&[1, data_at as u32]))
            },
        ]
        .concat(),
    );
    let minf = boxed(b"minf", &[vmhd, dinf, stbl].concat());
    let mdia = boxed(b"mdia", &[mdhd, hdlr, minf].concat());
    let trak = boxed(b"trak", &[tkhd, edts, mdia].concat());
    boxed(b"moov", &[mvhd, trak].concat())
}

/// The AVC sample entry with its decoder configuration (14496-15 5.3).
fn avc1(track: &Track<'_>) -> Vec<u8> {
    let sps = track.sps;
    let mut config = vec![1, sps[1], sps[2], sps[3], 0xff, 0xe1];
    config.extend_from_slice(&(sps.len() as u16).to_be_bytes());
    config.extend_from_slice(sps);
    config.push(1);
    config.extend_from_slice(&(track.pps.len() as u16).to_be_bytes());
    config.extend_from_slice(track.pps);
    let mut name = [0u8; 32];
    name[0] = 7;
    name[1..8].copy_from_slice(b"Tessera");
    boxed(
        b"avc1",
        &[
            &[0u8, 0, 0, 0, 0, 0, 0, 1][..],
            &[0; 16],
            &track.width.to_be_bytes(),
            &track.height.to_be_bytes(),
            &be32(&[0x0048_0000, 0x0048_0000, 0]),
            &1u16.to_be_bytes(),
            &name,
            &[0, 0x18, 0xff, 0xff],
            &boxed(b"avcC", &config),
        ]
        .concat(),
    )
}

/// `ctts`, run-length coded; nothing when every offset is zero.
fn composition_offsets(samples: &[Sample], ticks: u32) -> Vec<u8> {
    if samples.iter().all(|s| s.composition_offset == 0) {
        return Vec::new();
    }
    let mut runs: Vec<(u32, u32)> = Vec::new();
    for s in samples {
        match runs.last_mut() {
            Some((n, offset)) if *offset == s.composition_offset => *n += 1,
            _ => runs.push((1, s.composition_offset)),
        }
    }
    let mut body = be32(&[runs.len() as u32]);
    for (n, offset) in runs {
        body.extend(be32(&[n, offset.saturating_mul(ticks)]));
    }
    full(b"ctts", 0, &body)
}

/// `stss`: the samples a decoder can start at (IDR pictures).
fn sync_samples(samples: &[Sample]) -> Vec<u8> {
    let sync: Vec<u32> = samples
        .iter()
        .enumerate()
        .filter(|(_, s)| s.sync)
        .map(|(i, _)| i as u32 + 1)
        .collect();
    full(
        b"stss",
        0,
        &[be32(&[sync.len() as u32]), be32(&sync)].concat(),
    )
}
