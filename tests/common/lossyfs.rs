//! A FUSE filesystem that loses what was not made durable when the power is "cut": the method
//! Jepsen uses with LazyFS. Every file keeps its current bytes and the bytes it held at its
//! last `fsync`/`fdatasync`; every directory keeps its current entries and the entries it held
//! at its last `fsync` of the directory. [`LossyFs::cut`] turns the whole tree back into its
//! durable state: writes that were not synced are gone, and so are creations, renames and
//! removals whose directory was not synced. That is stricter than ext4, which in practice also
//! commits a new file's entry with the file's `fsync`; what survives here survives there.
//!
//! Files are opened with `FOPEN_DIRECT_IO`, so the kernel's page cache never holds bytes the
//! daemon does not know of: `sync_file_range` has nothing to write back and makes nothing
//! durable, as on a disk with a volatile cache. The tests mount it themselves (as root, no
//! `fusermount` needed); a cut freezes the filesystem (every request fails with `EIO`), the
//! caller kills the writer, and the filesystem is mounted again on its durable state.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};
use parking_lot::Mutex;

/// No caching of names or attributes in the kernel: after a cut they would be stale.
const TTL: Duration = Duration::ZERO;

#[derive(Clone)]
struct Inode {
    dir: bool,
    mode: u16,
    data: Vec<u8>,
    synced: Vec<u8>,
    entries: BTreeMap<OsString, u64>,
    synced_entries: BTreeMap<OsString, u64>,
}

impl Inode {
    fn new(dir: bool, mode: u16) -> Self {
        Inode {
            dir,
            mode,
            data: Vec::new(),
            synced: Vec::new(),
            entries: BTreeMap::new(),
            synced_entries: BTreeMap::new(),
        }
    }
}

/// The tree, shared by the mounted filesystem and the test.
#[derive(Default)]
struct State {
    inodes: BTreeMap<u64, Inode>,
    next: u64,
    frozen: bool,
    /// `fsync`s of files and directories since the mount (a test checks the code under test
    /// syncs at all).
    syncs: u64,
}

/// The filesystem's handle for the test: mount, cut, inspect.
#[derive(Clone)]
pub struct LossyFs {
    state: Arc<Mutex<State>>,
}

/// A mounted [`LossyFs`]; unmounted when dropped.
pub struct Mounted {
    pub fs: LossyFs,
    pub dir: PathBuf,
    session: Option<fuser::BackgroundSession>,
}

impl Drop for Mounted {
    fn drop(&mut self) {
        self.fs.state.lock().frozen = false;
        if let Some(s) = self.session.take() {
            let _ = s.umount_and_join();
        }
    }
}

impl Mounted {
    /// Cuts the power: from now on every request fails, so nothing more becomes durable. The
    /// caller then stops the writers (kill -9) and calls [`Mounted::restart`].
    pub fn freeze(&self) {
        self.fs.state.lock().frozen = true;
    }

    /// After [`Mounted::freeze`] and the writers' death: unmounts, turns the tree back into
    /// what was durable, and mounts it again, as a machine booting after a power cut.
    pub fn restart(&mut self) {
        self.freeze();
        if let Some(s) = self.session.take() {
            match s.umount_and_join() {
                // The session thread's last read of /dev/fuse may find the connection torn
                // down as aborted rather than gone (the kernel's ECONNABORTED instead of
                // ENODEV): the unmount itself succeeded, the tree is untouched.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionAborted => {}
                r => r.expect("unmount the lossy filesystem"),
            }
        }
        self.fs.lose_what_was_not_synced();
        self.session = Some(self.fs.spawn(&self.dir));
    }

    /// `fsync`s seen since the filesystem was made.
    pub fn syncs(&self) -> u64 {
        self.fs.state.lock().syncs
    }
}

impl LossyFs {
    /// Whether this process can mount it: root, with `/dev/fuse`. (CI runs as root.)
    pub fn available() -> bool {
        let root = std::process::Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
        if !root || !Path::new("/dev/fuse").exists() {
            eprintln!("skipped: the lossy filesystem needs root and /dev/fuse");
            return false;
        }
        true
    }

    /// An empty filesystem mounted on `dir` (which must exist and be empty).
    pub fn mount(dir: &Path) -> Mounted {
        let mut st = State {
            next: 2,
            ..State::default()
        };
        st.inodes.insert(1, Inode::new(true, 0o755));
        let fs = LossyFs {
            state: Arc::new(Mutex::new(st)),
        };
        let session = Some(fs.spawn(dir));
        Mounted {
            fs,
            dir: dir.to_path_buf(),
            session,
        }
    }

    fn spawn(&self, dir: &Path) -> fuser::BackgroundSession {
        self.state.lock().frozen = false;
        let mut cfg = fuser::Config::default();
        cfg.mount_options = vec![
            fuser::MountOption::FSName("idgraph-lossyfs".into()),
            fuser::MountOption::RW,
        ];
        cfg.n_threads = Some(2);
        fuser::spawn_mount(
            Handler {
                state: self.state.clone(),
            },
            dir,
            &cfg,
        )
        .expect("mount the lossy filesystem (root and /dev/fuse needed)")
    }

    fn lose_what_was_not_synced(&self) {
        let mut st = self.state.lock();
        for ino in st.inodes.values_mut() {
            ino.data = ino.synced.clone();
            ino.entries = ino.synced_entries.clone();
        }
    }
}

struct Handler {
    state: Arc<Mutex<State>>,
}

fn attr(n: u64, i: &Inode) -> FileAttr {
    FileAttr {
        ino: INodeNo(n),
        size: i.data.len() as u64,
        blocks: (i.data.len() as u64).div_ceil(512),
        atime: UNIX_EPOCH,
        mtime: SystemTime::now(),
        ctime: SystemTime::now(),
        crtime: UNIX_EPOCH,
        kind: if i.dir {
            FileType::Directory
        } else {
            FileType::RegularFile
        },
        perm: i.mode,
        nlink: if i.dir { 2 } else { 1 },
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

impl Handler {
    /// Runs `f` on the tree unless the power is cut.
    fn with<T>(&self, f: impl FnOnce(&mut State) -> Result<T, Errno>) -> Result<T, Errno> {
        let mut st = self.state.lock();
        if st.frozen {
            return Err(Errno::EIO);
        }
        f(&mut st)
    }

    fn make(
        &self,
        parent: INodeNo,
        name: &OsStr,
        dir: bool,
        mode: u32,
    ) -> Result<(u64, FileAttr), Errno> {
        self.with(|st| {
            let p = st.inodes.get(&parent.0).ok_or(Errno::ENOENT)?;
            if !p.dir {
                return Err(Errno::ENOTDIR);
            }
            if p.entries.contains_key(name) {
                return Err(Errno::EEXIST);
            }
            let n = st.next;
            st.next += 1;
            let ino = Inode::new(dir, (mode & 0o7777) as u16);
            let a = attr(n, &ino);
            st.inodes.insert(n, ino);
            st.inodes
                .get_mut(&parent.0)
                .expect("checked")
                .entries
                .insert(name.to_owned(), n);
            Ok((n, a))
        })
    }
}

impl Handler {
    /// An fsync: `keep` makes the inode's current state its durable one.
    fn sync(&self, ino: INodeNo, reply: ReplyEmpty, keep: impl FnOnce(&mut Inode)) {
        match self.with(|st| {
            st.syncs += 1;
            keep(st.inodes.get_mut(&ino.0).ok_or(Errno::ENOENT)?);
            Ok(())
        }) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn make_entry(&self, parent: INodeNo, name: &OsStr, dir: bool, mode: u32, reply: ReplyEntry) {
        match self.make(parent, name, dir, mode) {
            Ok((_, a)) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }
}

impl Filesystem for Handler {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.with(|st| {
            let n = *st
                .inodes
                .get(&parent.0)
                .and_then(|p| p.entries.get(name))
                .ok_or(Errno::ENOENT)?;
            Ok(attr(n, &st.inodes[&n]))
        }) {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.with(|st| Ok(attr(ino.0, st.inodes.get(&ino.0).ok_or(Errno::ENOENT)?))) {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        match self.with(|st| {
            let i = st.inodes.get_mut(&ino.0).ok_or(Errno::ENOENT)?;
            if let Some(m) = mode {
                i.mode = (m & 0o7777) as u16;
            }
            if let Some(s) = size {
                i.data.resize(s as usize, 0);
            }
            Ok(attr(ino.0, i))
        }) {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(e),
        }
    }

    fn mknod(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        self.make_entry(parent, name, false, mode, reply);
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        self.make_entry(parent, name, true, mode, reply);
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        match self.make(parent, name, false, mode) {
            Ok((n, a)) => reply.created(
                &TTL,
                &a,
                Generation(0),
                FileHandle(n),
                FopenFlags::FOPEN_DIRECT_IO,
            ),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.with(|st| {
            let p = st.inodes.get_mut(&parent.0).ok_or(Errno::ENOENT)?;
            p.entries.remove(name).ok_or(Errno::ENOENT)?;
            Ok(())
        }) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let empty = self.with(|st| {
            let n = *st.inodes[&parent.0]
                .entries
                .get(name)
                .ok_or(Errno::ENOENT)?;
            Ok(st.inodes[&n].entries.is_empty())
        });
        match empty {
            Ok(true) => self.unlink(req, parent, name, reply),
            Ok(false) => reply.error(Errno::ENOTEMPTY),
            Err(e) => reply.error(e),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        _flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        match self.with(|st| {
            let n = st
                .inodes
                .get_mut(&parent.0)
                .ok_or(Errno::ENOENT)?
                .entries
                .remove(name)
                .ok_or(Errno::ENOENT)?;
            st.inodes
                .get_mut(&newparent.0)
                .ok_or(Errno::ENOENT)?
                .entries
                .insert(newname.to_owned(), n);
            Ok(())
        }) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.with(|st| st.inodes.get(&ino.0).map(|_| ()).ok_or(Errno::ENOENT)) {
            Ok(()) => reply.opened(FileHandle(ino.0), FopenFlags::FOPEN_DIRECT_IO),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.with(|st| {
            let d = &st.inodes.get(&ino.0).ok_or(Errno::ENOENT)?.data;
            let from = (offset as usize).min(d.len());
            let to = (from + size as usize).min(d.len());
            Ok(d[from..to].to_vec())
        }) {
            Ok(b) => reply.data(&b),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match self.with(|st| {
            let d = &mut st.inodes.get_mut(&ino.0).ok_or(Errno::ENOENT)?.data;
            let end = offset as usize + data.len();
            if d.len() < end {
                d.resize(end, 0);
            }
            d[offset as usize..end].copy_from_slice(data);
            Ok(())
        }) {
            Ok(()) => reply.written(data.len() as u32),
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.sync(ino, reply, |i| i.synced = i.data.clone());
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.sync(ino, reply, |i| i.synced_entries = i.entries.clone());
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let entries = self.with(|st| {
            let d = st.inodes.get(&ino.0).ok_or(Errno::ENOENT)?;
            let mut v = vec![
                (ino.0, FileType::Directory, OsString::from(".")),
                (1, FileType::Directory, OsString::from("..")),
            ];
            for (name, n) in &d.entries {
                let kind = if st.inodes[n].dir {
                    FileType::Directory
                } else {
                    FileType::RegularFile
                };
                v.push((*n, kind, name.clone()));
            }
            Ok(v)
        });
        match entries {
            Ok(v) => {
                for (i, (n, kind, name)) in v.into_iter().enumerate().skip(offset as usize) {
                    if reply.add(INodeNo(n), (i + 1) as u64, kind, name) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(e),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        reply.statfs(1 << 24, 1 << 23, 1 << 23, 1 << 20, 1 << 19, 4096, 255, 4096);
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        reply.ok();
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        _mode: i32,
        reply: ReplyEmpty,
    ) {
        match self.with(|st| {
            let d = &mut st.inodes.get_mut(&ino.0).ok_or(Errno::ENOENT)?.data;
            let end = (offset + length) as usize;
            if d.len() < end {
                d.resize(end, 0);
            }
            Ok(())
        }) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }
}
