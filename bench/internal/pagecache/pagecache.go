// Package pagecache drops a directory's files from the kernel's page cache
// and measures how much of them is cached, so a benchmark can read "from
// disk" without dropping the caches of the whole (shared) machine.
package pagecache

import (
	"io/fs"
	"os"
	"path/filepath"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Evict asks the kernel to drop the cached pages of every file under dir
// (posix_fadvise DONTNEED). Only clean pages of files nobody has mapped are
// dropped: call it after the program that wrote them has synced and closed
// them. Resident tells what is left.
func Evict(dir string) error {
	return walk(dir, func(f *os.File, _ int64) error {
		return unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
	})
}

// Resident returns how many bytes of the files under dir are in the page
// cache (mincore), and their total size.
func Resident(dir string) (resident, total int64, err error) {
	files, err := Files(dir)
	for _, f := range files {
		resident += f.Resident
		total += f.Size
	}
	return resident, total, err
}

// File is one file's size and the bytes of it in the page cache.
type File struct {
	Path           string
	Size, Resident int64
}

// Files returns the page-cache residency of every file under dir.
func Files(dir string) ([]File, error) {
	page := int64(os.Getpagesize())
	var files []File
	err := walk(dir, func(f *os.File, size int64) error {
		file := File{Path: f.Name(), Size: size}
		defer func() { files = append(files, file) }()
		if size == 0 {
			return nil
		}
		m, err := unix.Mmap(int(f.Fd()), 0, int(size), unix.PROT_READ, unix.MAP_SHARED)
		if err != nil {
			return err
		}
		defer unix.Munmap(m)
		vec := make([]byte, (size+page-1)/page)
		if _, _, e := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&m[0])), uintptr(len(m)),
			uintptr(unsafe.Pointer(&vec[0]))); e != 0 {
			return e
		}
		for _, v := range vec {
			if v&1 != 0 {
				file.Resident += page
			}
		}
		file.Resident = min(file.Resident, size)
		return nil
	})
	return files, err
}

func walk(dir string, fn func(f *os.File, size int64) error) error {
	return filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		fi, err := f.Stat()
		if err != nil {
			return err
		}
		return fn(f, fi.Size())
	})
}
