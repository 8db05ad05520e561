package shm

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// The seals a shared region must carry: its size can never change, so neither side's mapping
// can fault.
const requiredSeals = unix.F_SEAL_SHRINK | unix.F_SEAL_GROW

// Create makes a sealed memfd of g.Size() bytes, maps it shared and lays out the client side in
// it. The caller owns fd (pass it to the server, keep it for reconnecting) and unmaps the
// memory with Unmap.
func Create(name string, g Geometry) (fd int, c *Client, err error) {
	if err := g.Validate(); err != nil {
		return -1, nil, fmt.Errorf("create shared region: %w", err)
	}
	fd, err = unix.MemfdCreate("drd-"+name, unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return -1, nil, fmt.Errorf("create shared region: memfd_create: %w", err)
	}
	fail := func(err error) (int, *Client, error) {
		return -1, nil, errors.Join(fmt.Errorf("create shared region: %w", err), unix.Close(fd))
	}
	if err := unix.Ftruncate(fd, int64(g.Size())); err != nil {
		return fail(fmt.Errorf("ftruncate %d: %w", g.Size(), err))
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, requiredSeals|unix.F_SEAL_SEAL); err != nil {
		return fail(fmt.Errorf("seal: %w", err))
	}
	mem, err := unix.Mmap(fd, 0, int(g.Size()), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return fail(fmt.Errorf("mmap: %w", err))
	}
	c, err = NewClient(mem, g)
	if err != nil {
		return fail(errors.Join(err, unix.Munmap(mem)))
	}
	return fd, c, nil
}

// Map maps a region a client passed (server side): the memfd must be sealed against shrinking
// and growing, and its header must describe a valid geometry that fits. The caller unmaps the
// memory with Unmap; fd stays the caller's.
func Map(fd int) ([]byte, Geometry, error) {
	seals, err := unix.FcntlInt(uintptr(fd), unix.F_GET_SEALS, 0)
	if err != nil {
		return nil, Geometry{}, fmt.Errorf("map shared region: not a sealable memfd: %w", err)
	}
	if seals&requiredSeals != requiredSeals {
		return nil, Geometry{}, fmt.Errorf("map shared region: seals %#x lack F_SEAL_SHRINK|F_SEAL_GROW", seals)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, Geometry{}, fmt.Errorf("map shared region: fstat: %w", err)
	}
	if st.Size < HeaderSize || st.Size > MaxSize+HeaderSize {
		return nil, Geometry{}, fmt.Errorf("map shared region: size %d out of range", st.Size)
	}
	mem, err := unix.Mmap(fd, 0, int(st.Size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, Geometry{}, fmt.Errorf("map shared region: mmap: %w", err)
	}
	g, err := ReadHeader(mem)
	if err != nil {
		return nil, Geometry{}, errors.Join(fmt.Errorf("map shared region: %w", err), unix.Munmap(mem))
	}
	return mem, g, nil
}

// Mem returns the whole mapped region.
func (r *region) Mem() []byte { return r.mem }

// Unmap unmaps a region from Create or Map.
func Unmap(mem []byte) error {
	if err := unix.Munmap(mem); err != nil {
		return fmt.Errorf("unmap shared region: %w", err)
	}
	return nil
}
