// A RESP server on Go's net and bufio, as a Go engineer would write one for the same work as
// examples/resp.ts: one goroutine per connection, a bufio.Reader and bufio.Writer each, replies
// flushed once the reader has nothing more buffered (so pipelined requests get one write), and
// PING, ECHO, SET, GET, DEL and CONFIG GET (what redis-benchmark asks for) over a map behind a
// mutex. It is the bench's reference for "what a user might pick instead", not a target: run
// with GOMAXPROCS=1, pinned to the server core like every other server.
//
// Usage: resp -port N (0 picks one). Prints {"event":"ready","port":N,"pid":P} once listening
// and exits when stdin closes, like the Node servers' control protocol.
package main

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"sync"
)

const maxBulk = 512 * 1024 * 1024

var (
	mu    sync.Mutex
	store = map[string][]byte{}
)

// readCommand reads one multibulk request (`*N\r\n` then N `$len\r\n<bytes>\r\n`).
func readCommand(r *bufio.Reader, args [][]byte) ([][]byte, error) {
	line, err := r.ReadSlice('\n')
	if err != nil {
		return nil, err
	}
	if len(line) < 3 || line[0] != '*' {
		return nil, errors.New("ERR Protocol error: expected '*'")
	}
	n, err := strconv.Atoi(string(line[1 : len(line)-2]))
	if err != nil || n < 1 || n > 1024*1024 {
		return nil, errors.New("ERR Protocol error: invalid multibulk length")
	}
	args = args[:0]
	for i := 0; i < n; i++ {
		line, err = r.ReadSlice('\n')
		if err != nil {
			return nil, err
		}
		if len(line) < 3 || line[0] != '$' {
			return nil, errors.New("ERR Protocol error: expected '$'")
		}
		size, err := strconv.Atoi(string(line[1 : len(line)-2]))
		if err != nil || size < 0 || size > maxBulk {
			return nil, errors.New("ERR Protocol error: invalid bulk length")
		}
		arg := make([]byte, size+2)
		if _, err := io.ReadFull(r, arg); err != nil {
			return nil, err
		}
		args = append(args, arg[:size])
	}
	return args, nil
}

func writeBulk(w *bufio.Writer, b []byte) {
	w.WriteByte('$')
	w.WriteString(strconv.Itoa(len(b)))
	w.WriteString("\r\n")
	w.Write(b)
	w.WriteString("\r\n")
}

func execute(args [][]byte, w *bufio.Writer) {
	name := bytes.ToLower(args[0])
	switch string(name) {
	case "ping":
		if len(args) == 2 {
			writeBulk(w, args[1])
		} else {
			w.WriteString("+PONG\r\n")
		}
	case "echo":
		if len(args) != 2 {
			w.WriteString("-ERR wrong number of arguments for 'echo' command\r\n")
			return
		}
		writeBulk(w, args[1])
	case "set":
		if len(args) != 3 {
			w.WriteString("-ERR syntax error\r\n")
			return
		}
		mu.Lock()
		store[string(args[1])] = args[2]
		mu.Unlock()
		w.WriteString("+OK\r\n")
	case "get":
		if len(args) != 2 {
			w.WriteString("-ERR wrong number of arguments for 'get' command\r\n")
			return
		}
		mu.Lock()
		v, ok := store[string(args[1])]
		mu.Unlock()
		if ok {
			writeBulk(w, v)
		} else {
			w.WriteString("$-1\r\n")
		}
	case "del":
		deleted := 0
		mu.Lock()
		for _, k := range args[1:] {
			if _, ok := store[string(k)]; ok {
				delete(store, string(k))
				deleted++
			}
		}
		mu.Unlock()
		fmt.Fprintf(w, ":%d\r\n", deleted)
	case "config":
		// redis-benchmark asks for save and appendonly at startup; a server without persistence.
		found := [][2]string{}
		for _, a := range args[2:] {
			switch string(bytes.ToLower(a)) {
			case "save":
				found = append(found, [2]string{string(a), ""})
			case "appendonly":
				found = append(found, [2]string{string(a), "no"})
			}
		}
		fmt.Fprintf(w, "*%d\r\n", len(found)*2)
		for _, kv := range found {
			writeBulk(w, []byte(kv[0]))
			writeBulk(w, []byte(kv[1]))
		}
	default:
		fmt.Fprintf(w, "-ERR unknown command '%s'\r\n", args[0])
	}
}

func serve(c net.Conn) {
	defer c.Close()
	r := bufio.NewReaderSize(c, 16*1024)
	w := bufio.NewWriterSize(c, 16*1024)
	var args [][]byte
	for {
		var err error
		args, err = readCommand(r, args)
		if err != nil {
			if err != io.EOF && !errors.Is(err, net.ErrClosed) {
				w.WriteString("-" + err.Error() + "\r\n")
				w.Flush()
			}
			return
		}
		execute(args, w)
		// Pipelining: one write for every reply to what has already arrived.
		if r.Buffered() == 0 {
			if w.Flush() != nil {
				return
			}
		}
	}
}

func main() {
	port := flag.Int("port", 0, "TCP port on 127.0.0.1 (0 picks one)")
	flag.Parse()
	ln, err := net.Listen("tcp4", fmt.Sprintf("127.0.0.1:%d", *port))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	go func() {
		// The harness closes stdin when it is done or dies: never outlive it.
		io.Copy(io.Discard, os.Stdin)
		os.Exit(0)
	}()
	fmt.Printf("{\"event\":\"ready\",\"port\":%d,\"pid\":%d}\n", ln.Addr().(*net.TCPAddr).Port, os.Getpid())
	for {
		c, err := ln.Accept()
		if err != nil {
			continue
		}
		go serve(c)
	}
}
