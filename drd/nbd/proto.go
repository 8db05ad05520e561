// Package nbd is DRD's NBD front-end: it exports DRD devices with the Network Block Device
// protocol (fixed newstyle negotiation, simple and structured replies) on unix and TCP
// sockets, so standard tools (nbdinfo, nbdcopy, qemu-img, fio's nbd engine) use them.
//
// The negotiation is a pure state machine (Negotiator: option in, replies out) and the
// transmission parser is a pure function (ParseRequest); both are fuzzed. Server is the driver:
// sockets and the DRD server's sessions.
//
// Supported options: EXPORT_NAME, ABORT, LIST, INFO, GO, STRUCTURED_REPLY; the others are
// answered NBD_REP_ERR_UNSUP (there is no TLS: use a unix socket, loopback or a private
// namespace). Commands: READ, WRITE, FLUSH, TRIM, DISC. Every export has 4096-byte blocks:
// NBD_INFO_BLOCK_SIZE says so (minimum = preferred = 4096, maximum = the server's largest
// request), and unaligned requests get EINVAL.
package nbd

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Magic numbers and constants of the NBD protocol.
const (
	nbdMagic     = 0x4e42444d41474943 // "NBDMAGIC"
	optMagic     = 0x49484156454F5054 // "IHAVEOPT"
	repMagic     = 0x3e889045565a9
	requestMagic = 0x25609513
	simpleMagic  = 0x67446698
	structMagic  = 0x668e33ef

	flagFixedNewstyle = 1 << 0
	flagNoZeroes      = 1 << 1

	OptExportName      = 1
	OptAbort           = 2
	OptList            = 3
	OptStartTLS        = 5
	OptInfo            = 6
	OptGo              = 7
	OptStructuredReply = 8

	repAck           = 1
	repServer        = 2
	repInfo          = 3
	repErrUnsup      = 1<<31 + 1
	repErrInvalid    = 1<<31 + 3
	repErrUnknown    = 1<<31 + 6
	repErrTooBig     = 1<<31 + 9
	infoExport       = 0
	infoName         = 1
	infoBlockSize    = 3
	transHasFlags    = 1 << 0
	transSendFlush   = 1 << 2
	transSendTrim    = 1 << 5
	transCanMultiCon = 1 << 8

	CmdRead  = 0
	CmdWrite = 1
	CmdDisc  = 2
	CmdFlush = 3
	CmdTrim  = 4

	cmdFlagFUA = 1 << 0 // not offered (no SEND_FUA): refused
	cmdFlagDF  = 1 << 2 // "don't fragment": reads, with structured replies

	replyFlagDone   = 1 << 0
	replyTypeNone   = 0
	replyTypeData   = 1
	replyTypeError  = 1<<15 + 1
	errPerm         = 1
	errIO           = 5
	errInvalid      = 22
	errNoSpace      = 28
	errNotSupported = 95
	errShutdown     = 108

	// MaxOptionData is the longest option payload accepted; longer ones end the connection.
	MaxOptionData = 4096
	// RequestSize is the size of a transmission request header.
	RequestSize = 28
)

var be = binary.BigEndian

// Export is a device offered by the negotiation.
type Export struct {
	Name string
	Size uint64
}

// Negotiator is the server side of the option haggling of fixed newstyle negotiation. It is
// pure: feed it the client's flags, then each option; it returns the bytes to send and, once an
// export is chosen (EXPORT_NAME or GO), the export.
type Negotiator struct {
	Exports    []Export
	MaxIO      uint32
	noZeroes   bool
	Structured bool // the client negotiated structured replies
}

// Greeting is what the server sends first.
func Greeting() []byte {
	b := be.AppendUint64(nil, nbdMagic)
	b = be.AppendUint64(b, optMagic)
	return be.AppendUint16(b, flagFixedNewstyle|flagNoZeroes)
}

// ClientFlags checks the client's 4-byte flags.
func (n *Negotiator) ClientFlags(b []byte) error {
	if len(b) != 4 {
		return fmt.Errorf("client flags: %d bytes", len(b))
	}
	f := be.Uint32(b)
	if f&^uint32(flagFixedNewstyle|flagNoZeroes) != 0 {
		return fmt.Errorf("client flags %#x: unknown bits", f)
	}
	if f&flagFixedNewstyle == 0 {
		return errors.New("client does not speak fixed newstyle negotiation")
	}
	n.noZeroes = f&flagNoZeroes != 0
	return nil
}

// OptionHeader parses the 16-byte header of an option: magic, option, data length.
func OptionHeader(b []byte) (opt, length uint32, err error) {
	if len(b) != 16 {
		return 0, 0, fmt.Errorf("option header: %d bytes", len(b))
	}
	if m := be.Uint64(b); m != optMagic {
		return 0, 0, fmt.Errorf("option header: bad magic %#x", m)
	}
	opt, length = be.Uint32(b[8:]), be.Uint32(b[12:])
	if length > MaxOptionData {
		return opt, length, fmt.Errorf("option %d: %d bytes of data (at most %d)", opt, length, MaxOptionData)
	}
	return opt, length, nil
}

// Outcome of one option.
type Outcome struct {
	Reply  []byte  // bytes to send
	Export *Export // set when transmission starts with this export
	Close  bool    // end the connection after sending Reply
}

func optReply(b []byte, opt, typ uint32, data []byte) []byte {
	b = be.AppendUint64(b, repMagic)
	b = be.AppendUint32(b, opt)
	b = be.AppendUint32(b, typ)
	b = be.AppendUint32(b, uint32(len(data)))
	return append(b, data...)
}

func errReply(opt, typ uint32, msg string) Outcome {
	return Outcome{Reply: optReply(nil, opt, typ, []byte(msg))}
}

func (n *Negotiator) find(name string) *Export {
	if name == "" && len(n.Exports) > 0 { // the default export
		return &n.Exports[0]
	}
	for i := range n.Exports {
		if n.Exports[i].Name == name {
			return &n.Exports[i]
		}
	}
	return nil
}

func (n *Negotiator) transFlags() uint16 {
	return transHasFlags | transSendFlush | transSendTrim | transCanMultiCon
}

// Option handles one option with its data.
func (n *Negotiator) Option(opt uint32, data []byte) Outcome {
	switch opt {
	case OptExportName:
		e := n.find(string(data))
		if e == nil {
			return Outcome{Close: true} // the protocol has no error reply here: hang up
		}
		b := be.AppendUint64(nil, e.Size)
		b = be.AppendUint16(b, n.transFlags())
		if !n.noZeroes {
			b = append(b, make([]byte, 124)...)
		}
		return Outcome{Reply: b, Export: e}
	case OptAbort:
		return Outcome{Reply: optReply(nil, opt, repAck, nil), Close: true}
	case OptList:
		if len(data) != 0 {
			return errReply(opt, repErrInvalid, "LIST takes no data")
		}
		var b []byte
		for _, e := range n.Exports {
			d := be.AppendUint32(nil, uint32(len(e.Name)))
			b = optReply(b, opt, repServer, append(d, e.Name...))
		}
		return Outcome{Reply: optReply(b, opt, repAck, nil)}
	case OptStructuredReply:
		if len(data) != 0 {
			return errReply(opt, repErrInvalid, "STRUCTURED_REPLY takes no data")
		}
		n.Structured = true
		return Outcome{Reply: optReply(nil, opt, repAck, nil)}
	case OptInfo, OptGo:
		name, infos, err := parseInfo(data)
		if err != nil {
			return errReply(opt, repErrInvalid, err.Error())
		}
		e := n.find(name)
		if e == nil {
			return errReply(opt, repErrUnknown, fmt.Sprintf("no export %q", name))
		}
		var b []byte
		info := be.AppendUint16(nil, infoExport)
		info = be.AppendUint64(info, e.Size)
		info = be.AppendUint16(info, n.transFlags())
		b = optReply(b, opt, repInfo, info)
		info = be.AppendUint16(nil, infoBlockSize)
		info = be.AppendUint32(info, 4096)
		info = be.AppendUint32(info, 4096)
		info = be.AppendUint32(info, n.MaxIO)
		b = optReply(b, opt, repInfo, info)
		for _, i := range infos {
			if i == infoName {
				b = optReply(b, opt, repInfo, append(be.AppendUint16(nil, infoName), e.Name...))
			}
		}
		b = optReply(b, opt, repAck, nil)
		out := Outcome{Reply: b}
		if opt == OptGo {
			out.Export = e
		}
		return out
	}
	return errReply(opt, repErrUnsup, fmt.Sprintf("option %d not supported", opt))
}

// parseInfo parses the data of INFO and GO: name length, name, count, info types.
func parseInfo(d []byte) (string, []uint16, error) {
	if len(d) < 6 {
		return "", nil, fmt.Errorf("INFO/GO data of %d bytes (at least 6)", len(d))
	}
	nl := be.Uint32(d)
	if uint64(nl)+6 > uint64(len(d)) {
		return "", nil, fmt.Errorf("INFO/GO name of %d bytes in %d bytes of data", nl, len(d))
	}
	name := string(d[4 : 4+nl])
	rest := d[4+nl:]
	count := int(be.Uint16(rest))
	if len(rest) != 2+2*count {
		return "", nil, fmt.Errorf("INFO/GO: %d information requests in %d bytes", count, len(rest)-2)
	}
	infos := make([]uint16, count)
	for i := range infos {
		infos[i] = be.Uint16(rest[2+2*i:])
	}
	return name, infos, nil
}

// Request is a transmission request.
type Request struct {
	Flags  uint16
	Type   uint16
	Cookie uint64
	Offset uint64
	Length uint32
}

// ParseRequest parses a 28-byte request header.
func ParseRequest(b []byte) (Request, error) {
	if len(b) != RequestSize {
		return Request{}, fmt.Errorf("request: %d bytes", len(b))
	}
	if m := be.Uint32(b); m != requestMagic {
		return Request{}, fmt.Errorf("request: bad magic %#x", m)
	}
	return Request{Flags: be.Uint16(b[4:]), Type: be.Uint16(b[6:]), Cookie: be.Uint64(b[8:]),
		Offset: be.Uint64(b[16:]), Length: be.Uint32(b[24:])}, nil
}

// FlagsValid says whether r's command flags are ones this server honours: none, or DF on a
// read once structured replies are on (every read is one chunk anyway). FUA is not offered, so
// a write carrying it must not be acknowledged as if it were durable: it is refused (EINVAL),
// as the protocol asks for unknown or invalid flags.
func (r Request) FlagsValid(structured bool) bool {
	return r.Flags == 0 || (r.Flags == cmdFlagDF && r.Type == CmdRead && structured)
}

// AppendRequest encodes a request header (clients and tests).
func AppendRequest(b []byte, r Request) []byte {
	b = be.AppendUint32(b, requestMagic)
	b = be.AppendUint16(b, r.Flags)
	b = be.AppendUint16(b, r.Type)
	b = be.AppendUint64(b, r.Cookie)
	b = be.AppendUint64(b, r.Offset)
	return be.AppendUint32(b, r.Length)
}

// AppendReply encodes the reply to a request: a simple reply, or with structured replies one
// chunk (OFFSET_DATA for a read, NONE for success, ERROR for an error) with the DONE flag. A
// read's data follows the returned header; the caller sends it.
func AppendReply(b []byte, structured bool, r Request, nbdErr uint32, readLen int) []byte {
	if !structured {
		b = be.AppendUint32(b, simpleMagic)
		b = be.AppendUint32(b, nbdErr)
		return be.AppendUint64(b, r.Cookie)
	}
	b = be.AppendUint32(b, structMagic)
	b = be.AppendUint16(b, replyFlagDone)
	switch {
	case nbdErr != 0:
		msg := errText(nbdErr)
		b = be.AppendUint16(b, replyTypeError)
		b = be.AppendUint64(b, r.Cookie)
		b = be.AppendUint32(b, uint32(6+len(msg)))
		b = be.AppendUint32(b, nbdErr)
		b = be.AppendUint16(b, uint16(len(msg)))
		return append(b, msg...)
	case r.Type == CmdRead:
		b = be.AppendUint16(b, replyTypeData)
		b = be.AppendUint64(b, r.Cookie)
		b = be.AppendUint32(b, uint32(8+readLen))
		return be.AppendUint64(b, r.Offset)
	default:
		b = be.AppendUint16(b, replyTypeNone)
		b = be.AppendUint64(b, r.Cookie)
		return be.AppendUint32(b, 0)
	}
}

func errText(e uint32) string {
	switch e {
	case errInvalid:
		return "invalid request: offset and length must be multiples of 4096 within the export"
	case errNoSpace:
		return "beyond the end of the export"
	case errNotSupported:
		return "not supported by the backing storage"
	case errShutdown:
		return "server shutting down"
	case errIO:
		return "i/o error on the backing storage"
	}
	return fmt.Sprintf("error %d", e)
}
