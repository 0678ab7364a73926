//! Reading objects straight from the repository's packs, each inflated once.
//!
//! libgit2 reads a packed blob by inflating its whole delta chain down to
//! the nearest base in its cache, and caches every base but the object
//! asked for: a first deployment of files that are deltas of each other
//! inflated each delta about three times (twice to read it, once more for
//! its header in the plan), and kept 16 MiB of bases and every page of the
//! pack it touched. Here every object read is cached (2 MiB at most, the
//! oldest dropped first), so the next one in its chain starts from it; the
//! pack is mapped whole, and the pages read are given back every 4 MiB.
//!
//! The packs were checked as they were received (index-pack hashes every
//! object), so, as git does, nothing is hashed again here; every length and
//! offset is still checked, and a damaged pack is an error, never a panic.
//! An object in no pack this reads (a loose one, an alternate's, one in a
//! pack written since) is `None`: the caller asks libgit2.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use git2::{ObjectType, Oid};

/// The most bytes of inflated objects kept for the next delta.
const CACHE_BYTES: usize = 2 << 20;
/// Bytes of a pack read before its pages are given back (see [`Map::read`]).
const RESIDENT_BYTES: usize = 4 << 20;
/// Deltas on deltas that a pack may chain: git writes at most 4095 (its
/// `--depth` limit); more is a loop of ref deltas.
const MAX_CHAIN: usize = 10_000;

/// The repository's packs, as found when first asked.
pub struct Packs {
    packs: Vec<Pack>,
    cache: Cache,
    inflate: flate2::Decompress,
    /// The type of each object recently looked at (by pack and offset): a
    /// delta's type is its base's, and the base is often the object before.
    kinds: Vec<(u32, usize, u8)>,
}

/// An object read from a pack.
pub struct Object {
    pub kind: ObjectType,
    pub data: Data,
}

struct Pack {
    idx: Map,
    pack: Map,
    count: usize,
}

/// A file mapped read-only. Git never changes a pack or its index in place
/// (a repack writes new files and removes the old ones, which stay readable
/// while mapped), as libgit2, which maps them too, relies on.
struct Map {
    ptr: *mut std::ffi::c_void,
    len: usize,
    /// Bytes read since the pages were last given back.
    touched: std::cell::Cell<usize>,
}

impl Map {
    fn open(path: &Path) -> Result<Option<Map>> {
        let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let len = usize::try_from(file.metadata()?.len())?;
        if len == 0 {
            return Ok(None);
        }
        // SAFETY: a new read-only private mapping of a whole file, never
        // written through; it is unmapped once, on drop.
        let ptr = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len,
                rustix::mm::ProtFlags::READ,
                rustix::mm::MapFlags::PRIVATE,
                &file,
                0,
            )
        }
        .with_context(|| format!("mapping {}", path.display()))?;
        Ok(Some(Map {
            ptr,
            len,
            touched: std::cell::Cell::new(0),
        }))
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: the mapping is `len` bytes, readable, and lives as long as `self`.
        unsafe { std::slice::from_raw_parts(self.ptr.cast::<u8>(), self.len) }
    }

    /// Counts `n` bytes read; past [`RESIDENT_BYTES`], the pages read so
    /// far are given back (they stay in the page cache): a mapped page
    /// counts in the process's memory once read, and a first deployment
    /// reads the whole pack.
    fn read(&self, n: usize) {
        let touched = self.touched.get() + n;
        if touched < RESIDENT_BYTES {
            self.touched.set(touched);
            return;
        }
        self.touched.set(0);
        // SAFETY: the whole mapping, which nothing borrows across this call
        // (callers copy what they need first); a private read-only file
        // mapping reads the same bytes again from the file after this.
        let _ =
            unsafe { rustix::mm::madvise(self.ptr, self.len, rustix::mm::Advice::LinuxDontNeed) };
    }
}

// SAFETY: the mapping is read-only and owned by the one `Map`; `touched`
// is only used by the thread that has it.
unsafe impl Send for Map {}

impl Drop for Map {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `open`, unmapped once.
        let _ = unsafe { rustix::mm::munmap(self.ptr, self.len) };
    }
}

/// What an entry's header says.
struct Header {
    kind: u8,
    size: usize,
    /// Where its deflated data starts.
    data: usize,
    base: Option<Base>,
}

enum Base {
    Offset(usize),
    Id(Oid),
}

const OFS_DELTA: u8 = 6;
const REF_DELTA: u8 = 7;

impl Pack {
    /// A pack and its version-2 index; `None` for anything else (an index
    /// of version 1, a pack without its index, one being written): its
    /// objects are read by libgit2.
    fn open(idx_path: &Path) -> Result<Option<Pack>> {
        let pack_path = idx_path.with_extension("pack");
        if !pack_path.exists() {
            return Ok(None);
        }
        let (Some(idx), Some(pack)) = (Map::open(idx_path)?, Map::open(&pack_path)?) else {
            return Ok(None);
        };
        let i = idx.bytes();
        if i.len() < 8 + 1024 + 40 || i[..8] != *b"\xfftOc\0\0\0\x02" {
            return Ok(None);
        }
        let count = be32(i, 8 + 255 * 4)? as usize;
        let p = pack.bytes();
        let fits = count
            .checked_mul(28)
            .and_then(|n| n.checked_add(8 + 1024 + 40))
            .is_some_and(|n| n <= i.len());
        if !fits || p.len() < 32 || p[..4] != *b"PACK" || be32(p, 8)? as usize != count {
            return Ok(None);
        }
        Ok(Some(Pack { idx, pack, count }))
    }

    /// The offset of `oid` in the pack, if the index lists it.
    fn find(&self, oid: &Oid) -> Result<Option<usize>> {
        let idx = self.idx.bytes();
        let id = oid.as_bytes();
        let first = usize::from(id[0]);
        let mut lo = match first {
            0 => 0,
            _ => be32(idx, 8 + (first - 1) * 4)? as usize,
        };
        let mut hi = be32(idx, 8 + first * 4)? as usize;
        if lo > hi || hi > self.count {
            bail!("pack index: its fan-out table is not in order");
        }
        let names = 8 + 1024;
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let name = idx
                .get(names + mid * 20..names + mid * 20 + 20)
                .context("pack index: cut short")?;
            match name.cmp(id) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return self.offset(mid).map(Some),
            }
        }
        Ok(None)
    }

    fn offset(&self, n: usize) -> Result<usize> {
        let idx = self.idx.bytes();
        let small = 8 + 1024 + self.count * 24;
        let offset = be32(idx, small + n * 4)?;
        let offset = match offset & 0x8000_0000 {
            0 => u64::from(offset),
            _ => {
                let large = small + self.count * 4 + (offset & 0x7fff_ffff) as usize * 8;
                let bytes = idx.get(large..large + 8).context("pack index: cut short")?;
                u64::from_be_bytes(bytes.try_into().expect("8 bytes"))
            }
        };
        let offset = usize::try_from(offset)?;
        if offset < 12 || offset >= self.pack.len.saturating_sub(20) {
            bail!("pack index: offset {offset} is outside the pack");
        }
        Ok(offset)
    }

    fn header(&self, at: usize) -> Result<Header> {
        // A page, where it reads a few bytes of it.
        self.pack.read(4096);
        let p = self.pack.bytes();
        let end = p.len().saturating_sub(20);
        let mut pos = at;
        let mut byte = || -> Result<u8> {
            let b = *p
                .get(pos)
                .filter(|_| pos < end)
                .context("pack: entry cut short")?;
            pos += 1;
            Ok(b)
        };
        let mut c = byte()?;
        let kind = (c >> 4) & 7;
        let mut size = u64::from(c & 15);
        let mut shift = 4;
        while c & 0x80 != 0 {
            c = byte()?;
            if shift > 57 {
                bail!("pack: the size of the entry at {at} is too large");
            }
            size |= u64::from(c & 0x7f) << shift;
            shift += 7;
        }
        let base = match kind {
            OFS_DELTA => {
                let mut c = byte()?;
                let mut back = u64::from(c & 0x7f);
                while c & 0x80 != 0 {
                    c = byte()?;
                    back = back
                        .checked_add(1)
                        .and_then(|b| b.checked_mul(128))
                        .context("pack: a delta's base offset overflows")?
                        | u64::from(c & 0x7f);
                }
                let base = usize::try_from(back)
                    .ok()
                    .and_then(|b| at.checked_sub(b))
                    .filter(|b| *b >= 12 && *b < at)
                    .with_context(|| {
                        format!("pack: the delta at {at} has its base outside the pack")
                    })?;
                Some(Base::Offset(base))
            }
            REF_DELTA => {
                let mut id = [0; 20];
                for b in &mut id {
                    *b = byte()?;
                }
                Some(Base::Id(Oid::from_bytes(&id)?))
            }
            1..=4 => None,
            other => bail!("pack: the entry at {at} has the unknown type {other}"),
        };
        Ok(Header {
            kind,
            size: usize::try_from(size)?,
            data: pos,
            base,
        })
    }
}

fn be32(bytes: &[u8], at: usize) -> Result<u32> {
    let b = bytes.get(at..at + 4).context("pack: cut short")?;
    Ok(u32::from_be_bytes(b.try_into().expect("4 bytes")))
}

/// An object's bytes, shared by the cache and its reader.
pub type Data = Arc<Vec<u8>>;
/// A pack (its number) and an offset in it.
type Key = (u32, usize);

/// The objects read last, oldest dropped first, for the deltas based on them.
#[derive(Default)]
struct Cache {
    map: HashMap<Key, (u8, Data)>,
    order: VecDeque<Key>,
    bytes: usize,
}

impl Cache {
    fn get(&self, key: Key) -> Option<(u8, Data)> {
        self.map.get(&key).cloned()
    }

    fn put(&mut self, key: Key, kind: u8, data: &Data) {
        if data.len() > CACHE_BYTES / 4 || self.map.contains_key(&key) {
            return;
        }
        self.bytes += data.len();
        self.map.insert(key, (kind, data.clone()));
        self.order.push_back(key);
        while self.bytes > CACHE_BYTES
            && let Some(old) = self.order.pop_front()
        {
            if let Some((_, data)) = self.map.remove(&old) {
                self.bytes -= data.len();
            }
        }
    }
}

fn object_type(kind: u8) -> ObjectType {
    match kind {
        1 => ObjectType::Commit,
        2 => ObjectType::Tree,
        3 => ObjectType::Blob,
        _ => ObjectType::Tag,
    }
}

impl Packs {
    /// The packs in `objects/pack` of a repository's object directory.
    /// One that cannot be read here is left to libgit2.
    pub fn open(objects: &Path) -> Packs {
        let mut packs = Vec::new();
        let dir = objects.join("pack");
        let mut names: Vec<_> = std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "idx"))
            .collect();
        names.sort();
        for idx in names {
            if let Ok(Some(pack)) = Pack::open(&idx) {
                packs.push(pack);
            }
        }
        Packs {
            packs,
            cache: Cache::default(),
            inflate: flate2::Decompress::new(true),
            kinds: vec![(u32::MAX, 0, 0); 4096],
        }
    }

    fn find(&self, oid: &Oid) -> Result<Option<(u32, usize)>> {
        for (n, pack) in self.packs.iter().enumerate() {
            if let Some(at) = pack.find(oid)? {
                return Ok(Some((n as u32, at)));
            }
        }
        Ok(None)
    }

    /// The type of the object `oid`, from the headers of its chain only
    /// (nothing inflated); `None` when no pack here has it.
    pub fn kind(&mut self, oid: &Oid) -> Result<Option<ObjectType>> {
        let Some((n, mut at)) = self.find(oid)? else {
            return Ok(None);
        };
        let pack = &self.packs[n as usize];
        let mut chain = Vec::new();
        let kind = loop {
            let slot = at % self.kinds.len();
            if self.kinds[slot].0 == n && self.kinds[slot].1 == at {
                break self.kinds[slot].2;
            }
            if chain.len() > MAX_CHAIN {
                bail!("pack: object {oid} is a chain of more than {MAX_CHAIN} deltas");
            }
            chain.push(at);
            let header = pack.header(at)?;
            match header.base {
                None => break header.kind,
                Some(Base::Offset(base)) => at = base,
                Some(Base::Id(id)) => match pack.find(&id)? {
                    Some(base) => at = base,
                    // A base in another pack: libgit2 knows.
                    None => return Ok(None),
                },
            }
        };
        for at in chain {
            let slot = at % self.kinds.len();
            self.kinds[slot] = (n, at, kind);
        }
        Ok(Some(object_type(kind)))
    }

    /// The object `oid`, or `None` when no pack here has it (or its delta
    /// chain leads out of the pack).
    pub fn read(&mut self, oid: &Oid) -> Result<Option<Object>> {
        let Some((n, at)) = self.find(oid)? else {
            return Ok(None);
        };
        self.read_at(n, at)
            .with_context(|| format!("reading object {oid} from its pack"))
    }

    fn read_at(&mut self, n: u32, start: usize) -> Result<Option<Object>> {
        let pack = &self.packs[n as usize];
        // Down the chain to a cached object or a whole one...
        let mut deltas = Vec::new();
        let mut at = start;
        let (kind, mut data) = loop {
            if let Some(found) = self.cache.get((n, at)) {
                break found;
            }
            if deltas.len() > MAX_CHAIN {
                bail!("a chain of more than {MAX_CHAIN} deltas");
            }
            let header = pack.header(at)?;
            match header.base {
                None => {
                    let data = Arc::new(inflate(&mut self.inflate, pack, &header)?);
                    self.cache.put((n, at), header.kind, &data);
                    break (header.kind, data);
                }
                Some(Base::Offset(base)) => {
                    deltas.push((at, header));
                    at = base;
                }
                Some(Base::Id(id)) => match pack.find(&id)? {
                    Some(base) => {
                        deltas.push((at, header));
                        at = base;
                    }
                    None => return Ok(None),
                },
            }
        };
        // ...then each delta applied on the way back up, each result kept
        // for the deltas based on it.
        for (at, header) in deltas.into_iter().rev() {
            let delta = inflate(&mut self.inflate, pack, &header)?;
            data = Arc::new(apply_delta(&data, &delta)?);
            self.cache.put((n, at), kind, &data);
        }
        Ok(Some(Object {
            kind: object_type(kind),
            data,
        }))
    }
}

/// Objects read in a thread of their own, ahead of the one that writes
/// them out, in the order it will ask for them: a first deployment inflates
/// on one core and writes files on the other, as `git archive | tar -x`
/// does in two processes. They come in batches (one wake-up of the writer
/// each, not one per file), at most a few batches ahead, and only blobs of
/// up to [`AHEAD_MAX`] bytes: for any other object the writer is told
/// `None` and reads it itself, as it does an object asked out of order.
pub struct ReadAhead {
    batches: std::sync::mpsc::Receiver<Vec<(Oid, Option<Data>)>>,
    batch: std::vec::IntoIter<(Oid, Option<Data>)>,
    next: Option<(Oid, Option<Data>)>,
}

/// The largest blob read ahead.
const AHEAD_MAX: usize = 256 << 10;
/// Objects and bytes in a batch, and batches sent ahead.
const BATCH: usize = 128;
const BATCH_BYTES: usize = 1 << 20;
const BATCHES_AHEAD: usize = 2;

impl ReadAhead {
    /// Starts reading the blobs `ids` from `packs`; `None` if no thread can be made.
    pub fn start<'s, I>(
        scope: &'s std::thread::Scope<'s, '_>,
        mut packs: Packs,
        ids: I,
    ) -> Option<ReadAhead>
    where
        I: Iterator<Item = Oid> + Send + 's,
    {
        let (send, batches) = std::sync::mpsc::sync_channel(BATCHES_AHEAD);
        let read = move || {
            // A panic here (a bug: damage is an error) ends the reading
            // only; the writer reads the rest itself.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                read_all(&mut packs, ids, &send)
            }));
        };
        std::thread::Builder::new()
            .name("read-ahead".into())
            .spawn_scoped(scope, read)
            .ok()?;
        Some(ReadAhead {
            batches,
            batch: Vec::new().into_iter(),
            next: None,
        })
    }

    /// The blob `id` if it is the next one read ahead; `None` otherwise
    /// (the caller reads it).
    pub fn take(&mut self, id: &Oid) -> Option<Data> {
        if self.next.is_none() {
            self.next = match self.batch.next() {
                Some(next) => Some(next),
                None => {
                    self.batch = self.batches.recv().ok()?.into_iter();
                    self.batch.next()
                }
            };
        }
        match &self.next {
            Some((next, _)) if next == id => self.next.take()?.1,
            _ => None,
        }
    }
}

/// Reads the blobs `ids` into batches for [`ReadAhead`], until the writer
/// stops taking them.
fn read_all(
    packs: &mut Packs,
    ids: impl Iterator<Item = Oid>,
    send: &std::sync::mpsc::SyncSender<Vec<(Oid, Option<Data>)>>,
) {
    let (mut batch, mut bytes) = (Vec::with_capacity(BATCH), 0);
    for id in ids {
        let data = match packs.read(&id) {
            Ok(Some(o)) if o.kind == ObjectType::Blob && o.data.len() <= AHEAD_MAX => {
                bytes += o.data.len();
                Some(o.data)
            }
            _ => None,
        };
        batch.push((id, data));
        if batch.len() == BATCH || bytes >= BATCH_BYTES {
            let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
            bytes = 0;
            // The writer stopped: nothing more to read.
            if send.send(full).is_err() {
                return;
            }
        }
    }
    let _ = send.send(batch);
}

/// An entry's data, inflated: exactly the size its header says.
fn inflate(z: &mut flate2::Decompress, pack: &Pack, header: &Header) -> Result<Vec<u8>> {
    let p = pack.pack.bytes();
    let input = p
        .get(header.data..p.len().saturating_sub(20))
        .context("pack: entry cut short")?;
    let mut out = Vec::new();
    out.try_reserve_exact(header.size.saturating_add(1))
        .context("pack: an entry larger than memory")?;
    z.reset(true);
    let status = z
        .decompress_vec(input, &mut out, flate2::FlushDecompress::Finish)
        .context("pack: an entry does not inflate")?;
    pack.pack.read(z.total_in() as usize);
    if status != flate2::Status::StreamEnd || out.len() != header.size {
        bail!(
            "pack: the entry at {} inflates to other than its {} bytes",
            header.data,
            header.size
        );
    }
    Ok(out)
}

/// A git delta applied to `base`: copies from it and new bytes.
fn apply_delta(base: &[u8], delta: &[u8]) -> Result<Vec<u8>> {
    let mut d = delta;
    let byte = |d: &mut &[u8]| -> Result<u8> {
        let (&b, rest) = d.split_first().context("delta cut short")?;
        *d = rest;
        Ok(b)
    };
    let varint = |d: &mut &[u8]| -> Result<usize> {
        let (mut n, mut shift) = (0u64, 0);
        loop {
            let b = byte(d)?;
            if shift > 57 {
                bail!("delta: a size overflows");
            }
            n |= u64::from(b & 0x7f) << shift;
            shift += 7;
            if b & 0x80 == 0 {
                return Ok(usize::try_from(n)?);
            }
        }
    };
    if varint(&mut d)? != base.len() {
        bail!("delta: its base has another size");
    }
    let size = varint(&mut d)?;
    let mut out = Vec::new();
    out.try_reserve_exact(size)
        .context("delta: a result larger than memory")?;
    while let Some((&cmd, rest)) = d.split_first() {
        d = rest;
        if cmd & 0x80 != 0 {
            let (mut offset, mut len) = (0usize, 0usize);
            for i in 0..4 {
                if cmd & (1 << i) != 0 {
                    offset |= usize::from(byte(&mut d)?) << (8 * i);
                }
            }
            for i in 0..3 {
                if cmd & (0x10 << i) != 0 {
                    len |= usize::from(byte(&mut d)?) << (8 * i);
                }
            }
            if len == 0 {
                len = 0x10000;
            }
            let copy = offset
                .checked_add(len)
                .and_then(|end| base.get(offset..end))
                .context("delta: a copy outside its base")?;
            out.extend_from_slice(copy);
        } else if cmd != 0 {
            let (new, rest) = d
                .split_at_checked(usize::from(cmd))
                .context("delta cut short")?;
            out.extend_from_slice(new);
            d = rest;
        } else {
            bail!("delta: an instruction 0");
        }
        if out.len() > size {
            bail!("delta: a result larger than it says");
        }
    }
    if out.len() != size {
        bail!("delta: a result smaller than it says");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::{Limits, Runner};

    fn git(dir: &Path, args: &[&str]) {
        let mut all = vec!["-C", dir.to_str().unwrap()];
        all.extend(["-c", "user.name=t", "-c", "user.email=t@example.invalid"]);
        all.extend(args);
        let expr = duct::cmd("git", all)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null");
        let out = Runner::new(Vec::new(), Limits::DEFAULT, None)
            .capture("git", expr)
            .unwrap();
        assert!(out.success, "git {args:?}");
    }

    /// A repository of similar files over three commits, repacked so that
    /// most blobs are deltas (on offsets, or on ids), in long chains.
    fn packed_repository(offsets: bool) -> tempfile::TempDir {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        git(dir, &["init", "-q"]);
        let lines: Vec<String> = (0..200).map(|i| format!("line {i} of a file\n")).collect();
        for round in 0..3 {
            for f in 0..60 {
                let mut text: String = lines.concat();
                text.insert_str(
                    (f * 37 + round * 11) % 2000,
                    &format!("change {f} {round}\n"),
                );
                std::fs::write(dir.join(format!("f{f:02}.txt")), text).unwrap();
            }
            git(dir, &["add", "-A"]);
            git(dir, &["commit", "-q", "-m", &format!("round {round}")]);
        }
        let base = format!("repack.useDeltaBaseOffset={offsets}");
        git(
            dir,
            &["-c", &base, "repack", "-adfq", "--depth=50", "--window=50"],
        );
        tmp
    }

    #[test]
    fn every_object_reads_as_libgit2_reads_it() {
        for offsets in [true, false] {
            let tmp = packed_repository(offsets);
            let repo = git2::Repository::open(tmp.path()).unwrap();
            let odb = repo.odb().unwrap();
            let mut packs = Packs::open(&repo.path().join("objects"));
            assert_eq!(packs.packs.len(), 1);
            let mut ids = Vec::new();
            odb.foreach(|id| {
                ids.push(*id);
                true
            })
            .unwrap();
            assert!(ids.len() > 180, "{}", ids.len());
            let mut deltas = 0;
            for id in ids {
                let theirs = odb.read(id).unwrap();
                let (n, at) = packs.find(&id).unwrap().unwrap();
                deltas += usize::from(packs.packs[n as usize].header(at).unwrap().base.is_some());
                assert_eq!(packs.kind(&id).unwrap(), Some(theirs.kind()), "{id}");
                let ours = packs.read(&id).unwrap().unwrap();
                assert_eq!(ours.kind, theirs.kind(), "{id}");
                assert!(*ours.data == theirs.data(), "{id}");
            }
            assert!(deltas > 100, "{deltas} deltas");
            let missing = Oid::from_str("1234567890123456789012345678901234567890").unwrap();
            assert!(packs.read(&missing).unwrap().is_none());
            assert!(packs.kind(&missing).unwrap().is_none());
        }
    }

    /// The blobs come in the order they are asked for; one asked out of
    /// order is `None` (its reader reads it itself) and leaves the order as
    /// it was; and a reader that stops early never holds the thread up.
    #[test]
    fn blobs_read_ahead_come_in_order() {
        let tmp = packed_repository(true);
        let repo = git2::Repository::open(tmp.path()).unwrap();
        let odb = repo.odb().unwrap();
        let mut ids = Vec::new();
        odb.foreach(|id| {
            ids.push(*id);
            true
        })
        .unwrap();
        ids.retain(|id| odb.read_header(*id).unwrap().1 == ObjectType::Blob);
        let objects = repo.path().join("objects");
        std::thread::scope(|scope| {
            let mut ahead =
                ReadAhead::start(scope, Packs::open(&objects), ids.clone().into_iter()).unwrap();
            assert!(ahead.take(&ids[1]).is_none());
            for id in &ids {
                let data = ahead.take(id).unwrap();
                assert!(*data == odb.read(*id).unwrap().data(), "{id}");
            }
            assert!(ahead.take(&ids[0]).is_none());
        });
        std::thread::scope(|scope| {
            let many = ids.iter().cycle().take(ids.len() * 20).copied();
            let mut ahead = ReadAhead::start(scope, Packs::open(&objects), many).unwrap();
            assert!(ahead.take(&ids[0]).is_some());
        });
    }

    /// A pack damaged anywhere gives errors (or, where the damage happens
    /// to read as other valid data, objects), never a panic.
    #[test]
    fn a_damaged_pack_is_an_error_never_a_panic() {
        let tmp = packed_repository(true);
        let repo = git2::Repository::open(tmp.path()).unwrap();
        let mut ids = Vec::new();
        repo.odb()
            .unwrap()
            .foreach(|id| {
                ids.push(*id);
                true
            })
            .unwrap();
        let dir = repo.path().join("objects/pack");
        let pack = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|e| e == "pack"))
            .unwrap();
        let good = std::fs::read(&pack).unwrap();
        let mut errors = 0;
        for step in 0..40 {
            let mut bad = good.clone();
            let at = 12 + (good.len() - 32) * step / 40;
            bad[at] ^= 0x5a;
            bad[at + 1] = 0xff;
            let _ = std::fs::remove_file(&pack);
            std::fs::write(&pack, &bad).unwrap();
            let mut packs = Packs::open(&repo.path().join("objects"));
            for id in &ids {
                errors += usize::from(packs.read(id).is_err());
                let _ = packs.kind(id);
            }
        }
        assert!(errors > 0);
    }

    #[test]
    fn deltas_copy_and_insert_and_refuse_what_leaves_the_base() {
        let base = b"hello, world";
        // Sizes 12 -> 11; copy 5 bytes at 0; insert " you!"; copy 1 at 11.
        let delta = [
            12, 11, 0x90, 5, 5, b' ', b'y', b'o', b'u', b'!', 0x91, 11, 1,
        ];
        assert_eq!(apply_delta(base, &delta).unwrap(), b"hello you!d");
        // A copy past the base's end.
        let delta = [12, 5, 0x91, 10, 5];
        assert!(apply_delta(base, &delta).is_err());
        // A result of another size than it says, a base of another size.
        assert!(apply_delta(base, &[12, 4, 0x90, 5]).is_err());
        assert!(apply_delta(base, &[11, 5, 0x90, 5]).is_err());
        assert!(apply_delta(base, &[12, 1, 0]).is_err());
        assert!(apply_delta(base, &[12]).is_err());
    }
}
