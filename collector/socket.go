package collector

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"
	"unsafe"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// eventSocket is the subscribed rtnetlink socket. It reads datagrams
// itself rather than through netlink.Conn.Receive for three reasons: a
// non-blocking read tells when the queue is empty (the moment to publish
// and to re-dump), one buffer serves every read, and the kernel's drop
// counter can be read beside it. The kernel reports an overflow (ENOBUFS)
// only once per congestion episode, while the queue stays non-empty;
// drops after that are visible only in SK_MEMINFO_DROPS, so the collector
// checks that counter after every batch of reads.
type eventSocket struct {
	conn *netlink.Conn
	raw  syscall.RawConn
	buf  []byte
	// drops is SK_MEMINFO_DROPS when last checked.
	drops uint32
	// noMeminfo: the kernel has no SO_MEMINFO (before Linux 4.6). Silent
	// drops then go unseen; ENOBUFS and the anti-entropy check remain.
	noMeminfo bool
}

// eventBufSize holds the largest rtnetlink notification (a link with many
// VF attributes stays well below it). A bigger datagram is truncated and
// handled as a lost event.
const eventBufSize = 64 << 10

// errQueueEmpty: a non-blocking read found nothing queued.
var errQueueEmpty = errors.New("event queue empty")

// errTruncated: a datagram was larger than the buffer; its events are lost.
var errTruncated = errors.New("rtnetlink datagram truncated")

func newEventSocket(conn *netlink.Conn) (*eventSocket, error) {
	raw, err := conn.SyscallConn()
	if err != nil {
		return nil, err
	}
	e := &eventSocket{conn: conn, raw: raw, buf: make([]byte, eventBufSize)}
	m, err := e.meminfo()
	switch {
	case errors.Is(err, unix.ENOPROTOOPT):
		e.noMeminfo = true
	case err != nil:
		return nil, err
	}
	e.drops = m[unix.SK_MEMINFO_DROPS]
	return e, nil
}

// next returns the next datagram, valid until the following call. With
// wait it blocks until one arrives or the read deadline passes
// (os.ErrDeadlineExceeded); without, an empty queue is errQueueEmpty.
// ENOBUFS (events were dropped) is returned as is.
func (e *eventSocket) next(wait bool) ([]byte, error) {
	var n int
	var errno syscall.Errno
	err := e.raw.Read(func(fd uintptr) bool {
		r, _, en := unix.Syscall6(unix.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&e.buf[0])), uintptr(len(e.buf)),
			unix.MSG_DONTWAIT|unix.MSG_TRUNC, 0, 0)
		n, errno = int(r), en
		switch errno {
		case unix.EINTR:
			return false
		case unix.EAGAIN:
			return !wait // false: wait for the socket to become readable
		}
		return true
	})
	switch {
	case err != nil:
		return nil, err
	case errno == unix.EAGAIN:
		return nil, errQueueEmpty
	case errno != 0:
		return nil, os.NewSyscallError("recvfrom", errno)
	case n > len(e.buf):
		return nil, errTruncated
	}
	return e.buf[:n], nil
}

// drain discards what is queued. Events still queued after a loss predate
// it: replayed on top of a fresh dump they would roll it back. Reading is
// far cheaper than the kernel's making of events, so the queue empties
// quickly even under a storm; the bound is a guard, and reaching it is an
// error that has the socket replaced (a new socket starts empty).
func (e *eventSocket) drain() error {
	deadline := time.Now().Add(2 * time.Second)
	for i := 0; ; i++ {
		_, err := e.next(false)
		switch {
		case errors.Is(err, errQueueEmpty):
			return nil
		case errors.Is(err, os.ErrDeadlineExceeded):
			// A deadline meant to wake the idle loop (Collector.inLoop)
			// landed while draining: clear it and go on.
			if err := e.conn.SetReadDeadline(time.Time{}); err != nil {
				return fmt.Errorf("drain rtnetlink events: %w", err)
			}
		case err == nil, errors.Is(err, unix.ENOBUFS), errors.Is(err, errTruncated):
		default:
			return fmt.Errorf("drain rtnetlink events: %w", err)
		}
		if i%1024 == 1023 && time.Now().After(deadline) {
			return errors.New("drain rtnetlink events: queue did not empty within 2s")
		}
	}
}

// meminfo reads the socket's SO_MEMINFO counters.
func (e *eventSocket) meminfo() ([unix.SK_MEMINFO_VARS]uint32, error) {
	var m [unix.SK_MEMINFO_VARS]uint32
	var errno syscall.Errno
	err := e.raw.Control(func(fd uintptr) {
		size := uint32(unsafe.Sizeof(m))
		_, _, errno = unix.Syscall6(unix.SYS_GETSOCKOPT, fd, unix.SOL_SOCKET, unix.SO_MEMINFO,
			uintptr(unsafe.Pointer(&m[0])), uintptr(unsafe.Pointer(&size)), 0)
	})
	if err == nil && errno != 0 {
		err = os.NewSyscallError("getsockopt SO_MEMINFO", errno)
	}
	return m, err
}

// newDrops returns how many datagrams the kernel dropped since the last
// call (or since the socket was opened).
func (e *eventSocket) newDrops() (uint32, error) {
	if e.noMeminfo {
		return 0, nil
	}
	m, err := e.meminfo()
	if err != nil {
		return 0, err
	}
	d := m[unix.SK_MEMINFO_DROPS] - e.drops
	e.drops = m[unix.SK_MEMINFO_DROPS]
	return d, nil
}

// queued reports whether anything waits in the receive queue.
func (e *eventSocket) queued() (bool, error) {
	if e.noMeminfo {
		return false, nil
	}
	m, err := e.meminfo()
	return m[unix.SK_MEMINFO_RMEM_ALLOC] > 0, err
}

// parseMessages splits a datagram into netlink messages. Their Data
// aliases b: decode it before the next read.
func parseMessages(b []byte, out []netlink.Message) ([]netlink.Message, error) {
	out = out[:0]
	for len(b) >= unix.NLMSG_HDRLEN {
		h := netlink.Header{
			Length:   binary.NativeEndian.Uint32(b[0:4]),
			Type:     netlink.HeaderType(binary.NativeEndian.Uint16(b[4:6])),
			Flags:    netlink.HeaderFlags(binary.NativeEndian.Uint16(b[6:8])),
			Sequence: binary.NativeEndian.Uint32(b[8:12]),
			PID:      binary.NativeEndian.Uint32(b[12:16]),
		}
		if h.Length < unix.NLMSG_HDRLEN || int(h.Length) > len(b) {
			return out, fmt.Errorf("netlink message length %d out of range (%d bytes left)", h.Length, len(b))
		}
		out = append(out, netlink.Message{Header: h, Data: b[unix.NLMSG_HDRLEN:h.Length]})
		adv := (int(h.Length) + unix.NLMSG_ALIGNTO - 1) &^ (unix.NLMSG_ALIGNTO - 1)
		if adv > len(b) {
			break
		}
		b = b[adv:]
	}
	return out, nil
}
