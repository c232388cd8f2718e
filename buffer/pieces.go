package buffer

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/dgraph-io/badger/v4"
)

// Values larger than pieceSize are stored in pieces: badger refuses a value
// larger than its value-log file (valueLogFileSize), and a chunk holding one
// large record, or the dead letter of such a record, can be larger than
// that. The first piece is stored under the value's own key, the others
// under
//
//	p/<key><piece uint32 BE>   (piece 1, 2, …)
//
// so every piece is a value-log entry and a transaction holding them costs
// badger a few bytes of pointer each, whatever their size.
const pieceSize = valueLogFileSize / 2

var prefixPiece = []byte("p/")

func pieceKey(k []byte, i int) []byte {
	out := make([]byte, 0, len(prefixPiece)+len(k)+4)
	out = append(append(out, prefixPiece...), k...)
	return binary.BigEndian.AppendUint32(out, uint32(i))
}

// pieceCount is the number of pieces a value of n bytes is stored in.
func pieceCount(n int64) int {
	if n <= pieceSize {
		return 1
	}
	return int((n + pieceSize - 1) / pieceSize)
}

// writer is what pieces are written to: a transaction or a write batch.
type writer interface {
	Set(k, v []byte) error
	Delete(k []byte) error
}

// setPieces stores data under k, in pieces if it is larger than pieceSize.
// It returns the number of pieces.
func setPieces(txn writer, k, data []byte) (int, error) {
	n := pieceCount(int64(len(data)))
	for i := range n {
		part := data[i*pieceSize : min((i+1)*pieceSize, len(data))]
		pk := k
		if i > 0 {
			pk = pieceKey(k, i)
		}
		if err := txn.Set(pk, part); err != nil {
			return 0, err
		}
	}
	return n, nil
}

// errMissing is a piece that should exist and does not.
var errMissing = errors.New("data missing")

// getPieces reads the value stored under k in n pieces, appending it to dst.
func getPieces(txn *badger.Txn, k []byte, n int, dst []byte) ([]byte, error) {
	for i := range max(n, 1) {
		pk := k
		if i > 0 {
			pk = pieceKey(k, i)
		}
		it, err := txn.Get(pk)
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil, fmt.Errorf("%w: piece %d of %d", errMissing, i+1, n)
		}
		if err != nil {
			return nil, err
		}
		if err := it.Value(func(v []byte) error { dst = append(dst, v...); return nil }); err != nil {
			return nil, err
		}
	}
	return dst, nil
}

// deletePieces deletes the value stored under k in n pieces.
func deletePieces(txn writer, k []byte, n int) error {
	if err := txn.Delete(k); err != nil {
		return err
	}
	for i := 1; i < n; i++ {
		if err := txn.Delete(pieceKey(k, i)); err != nil {
			return err
		}
	}
	return nil
}
