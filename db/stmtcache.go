package db

import (
	"context"
	"database/sql"
	"sync"
)

// pool is a *sql.DB whose statements are prepared once and reused: SQLite
// otherwise parses every statement on every call, which showed as an eighth
// of callwake's CPU under load.
//
// Preparing takes a connection. The writer has only one, which a
// transaction may hold: so the lock is never held while preparing, and a
// transaction only uses statements already prepared (the others run as
// plain SQL and are prepared once the transaction is over).
type pool struct {
	*sql.DB
	mu      sync.Mutex
	stmts   map[string]*sql.Stmt
	pending map[string]struct{} // met in a transaction, to prepare after it
}

func newPool(db *sql.DB) *pool {
	return &pool{DB: db, stmts: map[string]*sql.Stmt{}, pending: map[string]struct{}{}}
}

func (p *pool) cached(query string) (*sql.Stmt, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	st, ok := p.stmts[query]
	return st, ok
}

func (p *pool) stmt(ctx context.Context, query string) (*sql.Stmt, error) {
	if st, ok := p.cached(query); ok {
		return st, nil
	}
	st, err := p.DB.PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if prev, ok := p.stmts[query]; ok {
		st.Close() // prepared twice at once: keep the first
		return prev, nil
	}
	p.stmts[query] = st
	return st, nil
}

// preparePending prepares the statements transactions ran unprepared.
func (p *pool) preparePending(ctx context.Context) {
	p.mu.Lock()
	queries := make([]string, 0, len(p.pending))
	for q := range p.pending {
		queries = append(queries, q)
	}
	clear(p.pending)
	p.mu.Unlock()
	for _, q := range queries {
		_, _ = p.stmt(ctx, q)
	}
}

// txStmt is the prepared statement for query inside tx, or nil (and the
// query is noted to be prepared after the transaction).
func (p *pool) txStmt(ctx context.Context, tx *sql.Tx, query string) *sql.Stmt {
	if st, ok := p.cached(query); ok {
		return tx.StmtContext(ctx, st)
	}
	p.mu.Lock()
	p.pending[query] = struct{}{}
	p.mu.Unlock()
	return nil
}

// ExecContext runs a prepared statement.
func (p *pool) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	st, err := p.stmt(ctx, query)
	if err != nil {
		return nil, err
	}
	return st.ExecContext(ctx, args...)
}

// QueryContext runs a prepared query.
func (p *pool) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	st, err := p.stmt(ctx, query)
	if err != nil {
		return nil, err
	}
	return st.QueryContext(ctx, args...)
}

// QueryRowContext runs a prepared query for one row. A statement that does
// not prepare is run unprepared, so that its error comes back from Scan.
func (p *pool) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	st, err := p.stmt(ctx, query)
	if err != nil {
		return p.DB.QueryRowContext(ctx, query, args...)
	}
	return st.QueryRowContext(ctx, args...)
}

// begin starts a write transaction that uses the pool's statements.
func (p *pool) begin(ctx context.Context) (*txn, error) {
	tx, err := p.DB.BeginTx(ctx, nil)
	if err != nil {
		return nil, err
	}
	return &txn{Tx: tx, pool: p}, nil
}

// Close closes the statements and the database.
func (p *pool) Close() error {
	p.mu.Lock()
	for _, st := range p.stmts {
		st.Close()
	}
	p.stmts = map[string]*sql.Stmt{}
	p.mu.Unlock()
	return p.DB.Close()
}

// txn is a transaction that runs the pool's prepared statements.
type txn struct {
	*sql.Tx
	pool *pool
}

func (t *txn) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	if st := t.pool.txStmt(ctx, t.Tx, query); st != nil {
		return st.ExecContext(ctx, args...)
	}
	return t.Tx.ExecContext(ctx, query, args...)
}

func (t *txn) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	if st := t.pool.txStmt(ctx, t.Tx, query); st != nil {
		return st.QueryContext(ctx, args...)
	}
	return t.Tx.QueryContext(ctx, query, args...)
}

func (t *txn) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	if st := t.pool.txStmt(ctx, t.Tx, query); st != nil {
		return st.QueryRowContext(ctx, args...)
	}
	return t.Tx.QueryRowContext(ctx, query, args...)
}
