/* Files written into an ext2/3/4 filesystem with e2fsprogs' libext2fs,
 * through an io_manager whose reads and writes are amitool's callbacks:
 * the filesystem is read where it lies (a file, an EBS snapshot) and every
 * block libext2fs writes lands in amitool's copy-on-write overlay. The
 * allocation, extents, directories and checksums are libext2fs's own. */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <et/com_err.h>
#include <ext2fs/ext2fs.h>

typedef int (*amitool_io_fn)(void *ctx, unsigned long long offset, size_t len, void *buf);

struct amitool_io {
	void *ctx;
	amitool_io_fn read;
	amitool_io_fn write;
};

/* The one filesystem being opened: libext2fs opens its channel by name. */
static __thread struct amitool_io *opening;

struct channel_data {
	struct amitool_io io;
};

static struct struct_io_manager amitool_manager;

static errcode_t am_open(const char *name, int flags, io_channel *channel)
{
	io_channel io = NULL;
	struct channel_data *data = NULL;
	errcode_t err;
	(void)flags;
	if (!opening)
		return EXT2_ET_BAD_DEVICE_NAME;
	if ((err = ext2fs_get_memzero(sizeof(*io), &io)))
		return err;
	if ((err = ext2fs_get_memzero(sizeof(*data), &data)))
		goto fail;
	if ((err = ext2fs_get_mem(strlen(name) + 1, &io->name)))
		goto fail;
	strcpy(io->name, name);
	data->io = *opening;
	io->magic = EXT2_ET_MAGIC_IO_CHANNEL;
	io->manager = &amitool_manager;
	io->block_size = 1024;
	io->refcount = 1;
	io->private_data = data;
	*channel = io;
	return 0;
fail:
	if (data)
		ext2fs_free_mem(&data);
	if (io)
		ext2fs_free_mem(&io);
	return err;
}

static errcode_t am_close(io_channel channel)
{
	if (--channel->refcount > 0)
		return 0;
	ext2fs_free_mem(&channel->private_data);
	if (channel->name)
		ext2fs_free_mem(&channel->name);
	ext2fs_free_mem(&channel);
	return 0;
}

static errcode_t am_set_blksize(io_channel channel, int blksize)
{
	channel->block_size = blksize;
	return 0;
}

static size_t span(io_channel channel, int count)
{
	/* A negative count is a byte count (libext2fs's convention). */
	return count < 0 ? (size_t)(-count) : (size_t)count * channel->block_size;
}

static errcode_t am_read64(io_channel channel, unsigned long long block, int count, void *buf)
{
	struct channel_data *d = channel->private_data;
	size_t len = span(channel, count);
	if (d->io.read(d->io.ctx, block * channel->block_size, len, buf))
		return EXT2_ET_SHORT_READ;
	return 0;
}

static errcode_t am_write64(io_channel channel, unsigned long long block, int count,
			    const void *buf)
{
	struct channel_data *d = channel->private_data;
	size_t len = span(channel, count);
	if (d->io.write(d->io.ctx, block * channel->block_size, len, (void *)buf))
		return EXT2_ET_SHORT_WRITE;
	return 0;
}

static errcode_t am_read(io_channel channel, unsigned long block, int count, void *buf)
{
	return am_read64(channel, block, count, buf);
}

static errcode_t am_write(io_channel channel, unsigned long block, int count, const void *buf)
{
	return am_write64(channel, block, count, buf);
}

static errcode_t am_write_byte(io_channel channel, unsigned long offset, int size,
			       const void *buf)
{
	struct channel_data *d = channel->private_data;
	if (size < 0)
		return EXT2_ET_INVALID_ARGUMENT;
	if (d->io.write(d->io.ctx, offset, (size_t)size, (void *)buf))
		return EXT2_ET_SHORT_WRITE;
	return 0;
}

static errcode_t am_flush(io_channel channel)
{
	(void)channel;
	return 0;
}

static struct struct_io_manager amitool_manager = {
	.magic = EXT2_ET_MAGIC_IO_MANAGER,
	.name = "amitool overlay",
	.open = am_open,
	.close = am_close,
	.set_blksize = am_set_blksize,
	.read_blk = am_read,
	.write_blk = am_write,
	.flush = am_flush,
	.write_byte = am_write_byte,
	.read_blk64 = am_read64,
	.write_blk64 = am_write64,
};

struct amitool_file {
	const char *path; /* absolute, inside the filesystem */
	const unsigned char *data;
	size_t len;
	unsigned int mode; /* permission bits */
	unsigned int uid;
	unsigned int gid;
};

static int fail(char *msg, size_t msglen, const char *what, const char *path, errcode_t err)
{
	snprintf(msg, msglen, "%s %s: %s", what, path, error_message(err));
	return -1;
}

static void set_times(ext2_filsys fs, struct ext2_inode_large *inode, time_t now, int created)
{
	inode->i_mtime = (__u32)now;
	inode->i_ctime = (__u32)now;
	if (EXT2_INODE_SIZE(fs->super) > EXT2_GOOD_OLD_INODE_SIZE &&
	    inode_includes(inode->i_extra_isize, i_ctime_extra)) {
		inode->i_mtime_extra = 0;
		inode->i_ctime_extra = 0;
	}
	if (created) {
		inode->i_atime = (__u32)now;
		if (EXT2_INODE_SIZE(fs->super) > EXT2_GOOD_OLD_INODE_SIZE &&
		    inode_includes(inode->i_extra_isize, i_crtime_extra)) {
			inode->i_atime_extra = 0;
			inode->i_crtime = (__u32)now;
			inode->i_crtime_extra = 0;
		}
	}
}

/* Write one file: an existing regular file is rewritten in place (same
 * inode, so hard links and ownership stay); a missing one is created. */
static int write_one(ext2_filsys fs, const struct amitool_file *f, time_t now, char *msg,
		     size_t msglen)
{
	errcode_t err;
	ext2_ino_t dir, ino = 0;
	struct ext2_inode_large inode;
	ext2_file_t file;
	unsigned int written;
	int created = 0;
	char *parent, *slash;
	const char *name;

	parent = strdup(f->path);
	if (!parent)
		return fail(msg, msglen, "write", f->path, ENOMEM);
	slash = strrchr(parent, '/');
	if (!slash || slash[1] == '\0') {
		free(parent);
		return fail(msg, msglen, "write", f->path, EXT2_ET_INVALID_ARGUMENT);
	}
	name = f->path + (slash - parent) + 1;
	if (slash == parent)
		slash[1] = '\0';
	else
		*slash = '\0';
	err = ext2fs_namei(fs, EXT2_ROOT_INO, EXT2_ROOT_INO, parent, &dir);
	free(parent);
	if (err)
		return fail(msg, msglen, "find the directory of", f->path, err);

	err = ext2fs_lookup(fs, dir, name, strlen(name), NULL, &ino);
	if (err == EXT2_ET_FILE_NOT_FOUND) {
		ino = 0;
	} else if (err) {
		return fail(msg, msglen, "look up", f->path, err);
	}
	memset(&inode, 0, sizeof(inode));
	if (ino) {
		err = ext2fs_read_inode_full(fs, ino, (struct ext2_inode *)&inode, sizeof(inode));
		if (err)
			return fail(msg, msglen, "read the inode of", f->path, err);
		if (!LINUX_S_ISREG(inode.i_mode))
			return fail(msg, msglen, "rewrite", f->path, EXT2_ET_FILE_NOT_FOUND);
		err = ext2fs_punch(fs, ino, (struct ext2_inode *)&inode, NULL, 0, ~0ULL);
		if (err)
			return fail(msg, msglen, "truncate", f->path, err);
		err = ext2fs_read_inode_full(fs, ino, (struct ext2_inode *)&inode, sizeof(inode));
		if (err)
			return fail(msg, msglen, "read the inode of", f->path, err);
		inode.i_flags &= ~EXT4_INLINE_DATA_FL;
	} else {
		created = 1;
		err = ext2fs_new_inode(fs, dir, LINUX_S_IFREG | 0644, NULL, &ino);
		if (err)
			return fail(msg, msglen, "allocate an inode for", f->path, err);
		err = ext2fs_link(fs, dir, name, ino, EXT2_FT_REG_FILE);
		if (err == EXT2_ET_DIR_NO_SPACE) {
			err = ext2fs_expand_dir(fs, dir);
			if (!err)
				err = ext2fs_link(fs, dir, name, ino, EXT2_FT_REG_FILE);
		}
		if (err)
			return fail(msg, msglen, "link", f->path, err);
		ext2fs_inode_alloc_stats2(fs, ino, +1, 0);
		inode.i_links_count = 1;
		if (EXT2_INODE_SIZE(fs->super) > EXT2_GOOD_OLD_INODE_SIZE)
			inode.i_extra_isize = sizeof(struct ext2_inode_large) - EXT2_GOOD_OLD_INODE_SIZE;
	}
	inode.i_mode = LINUX_S_IFREG | (f->mode & 07777);
	inode.i_uid = f->uid & 0xffff;
	ext2fs_set_i_uid_high(inode, f->uid >> 16);
	inode.i_gid = f->gid & 0xffff;
	ext2fs_set_i_gid_high(inode, f->gid >> 16);
	set_times(fs, &inode, now, created);
	if (created) {
		err = ext2fs_write_new_inode(fs, ino, (struct ext2_inode *)&inode);
	} else {
		err = ext2fs_write_inode_full(fs, ino, (struct ext2_inode *)&inode, sizeof(inode));
	}
	if (err)
		return fail(msg, msglen, "write the inode of", f->path, err);
	if (created && ext2fs_has_feature_extents(fs->super)) {
		ext2_extent_handle_t handle;
		err = ext2fs_read_inode_full(fs, ino, (struct ext2_inode *)&inode, sizeof(inode));
		if (!err) {
			inode.i_flags &= ~EXT4_EXTENTS_FL;
			err = ext2fs_extent_open2(fs, ino, (struct ext2_inode *)&inode, &handle);
		}
		if (err)
			return fail(msg, msglen, "start the extents of", f->path, err);
		ext2fs_extent_free(handle);
	}
	err = ext2fs_file_open(fs, ino, EXT2_FILE_WRITE, &file);
	if (err)
		return fail(msg, msglen, "open", f->path, err);
	size_t done = 0;
	while (done < f->len) {
		size_t chunk = f->len - done > (1u << 20) ? (1u << 20) : f->len - done;
		err = ext2fs_file_write(file, f->data + done, (unsigned int)chunk, &written);
		if (err)
			break;
		if (written == 0) {
			err = EXT2_ET_SHORT_WRITE;
			break;
		}
		done += written;
	}
	if (!err)
		err = ext2fs_file_set_size2(file, f->len);
	errcode_t cerr = ext2fs_file_close(file);
	if (!err)
		err = cerr;
	if (err)
		return fail(msg, msglen, "write", f->path, err);
	/* ext2fs_file_close wrote the size and blocks; set the times once more. */
	err = ext2fs_read_inode_full(fs, ino, (struct ext2_inode *)&inode, sizeof(inode));
	if (!err) {
		set_times(fs, &inode, now, created);
		err = ext2fs_write_inode_full(fs, ino, (struct ext2_inode *)&inode, sizeof(inode));
	}
	if (err)
		return fail(msg, msglen, "write the inode of", f->path, err);
	return 0;
}

/* Open the filesystem through `io`, write `files`, close it (the primary
 * superblock and group descriptors only). 0, or -1 with `msg` set. */
int amitool_ext_write(struct amitool_io *io, long long now, const struct amitool_file *files,
		      size_t n, char *msg, size_t msglen)
{
	ext2_filsys fs = NULL;
	errcode_t err;
	size_t i;
	int rc = 0;

	initialize_ext2_error_table();
	opening = io;
	err = ext2fs_open2("amitool", NULL,
			   EXT2_FLAG_RW | EXT2_FLAG_64BITS | EXT2_FLAG_MASTER_SB_ONLY,
			   0, 0, &amitool_manager, &fs);
	opening = NULL;
	if (err) {
		snprintf(msg, msglen, "open the filesystem: %s", error_message(err));
		return -1;
	}
	fs->now = (time_t)now;
	/* What the journal holds would be replayed over these writes at mount. */
	if (ext2fs_has_feature_journal_needs_recovery(fs->super)) {
		snprintf(msg, msglen, "the filesystem's journal needs recovery (it was not "
				      "unmounted cleanly, as in a snapshot of a running instance): "
				      "stop the instance first (--stop-source) or migrate an image");
		ext2fs_free(fs);
		return -1;
	}
	err = ext2fs_read_bitmaps(fs);
	if (err) {
		snprintf(msg, msglen, "read the bitmaps: %s", error_message(err));
		ext2fs_free(fs);
		return -1;
	}
	for (i = 0; i < n && rc == 0; i++)
		rc = write_one(fs, &files[i], (time_t)now, msg, msglen);
	if (rc) {
		ext2fs_free(fs);
		return rc;
	}
	fs->super->s_wtime = (__u32)now;
	err = ext2fs_close_free(&fs);
	if (err) {
		snprintf(msg, msglen, "write the filesystem's metadata: %s", error_message(err));
		return -1;
	}
	return 0;
}
