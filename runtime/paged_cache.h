// A paged KV cache for serving: one pool of fixed-size blocks that sequences of
// different lengths draw from, each sequence a block table. The pool is a KvCache
// of one row whose slots are the blocks' slots, block p holding slots
// [p * block_size, (p + 1) * block_size) of every kv head. The attention pipelines
// read a sequence's keys through its granule table (layout::kCacheGranule), built
// here from its block table.
//
// Sequences may share blocks (a fork shares all of them): a block is freed when its
// last sequence lets go of it, and a shared block is copied before a write into it.
// In a sliding-window layer a sequence lets go of the blocks no later query can see
// but the last of them, kept so that a rollback of up to block_size tokens since
// the last forward can always be made; its memory stays bounded by the window (and the call's new tokens).
//
// Every operation either succeeds or throws gqa::Error with nothing changed; a
// forward reserves its blocks first (Step) and commits them only once every stage
// succeeded.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <vector>

#include "kv_cache.h"

namespace gqa::detail {

class Kernels;

class PagedCache {
public:
    struct Sequence {
        std::vector<int32_t> blocks;     // logical block -> pool block; -1: let go (window)
        std::vector<int32_t> positions;  // the RoPE position of each slot
        int released_blocks = 0;         // leading blocks let go of
        int length() const { return int(positions.size()); }
    };

    // One row of a forward: `tokens` new tokens of `sequence`.
    struct Row {
        int sequence, tokens;
    };

    // A forward's reservation: the blocks its rows write, taken from the pool but not
    // yet part of the sequences. commit() makes them so; cancel() returns them.
    struct Step {
        std::vector<Row> rows;
        std::vector<std::vector<int32_t>> tables;  // each row's block table after the step
        std::vector<int32_t> taken;                // blocks taken from the free list
        std::vector<int32_t> replaced;             // shared blocks the step copied (let go of at commit)
    };

    // Sizes already validated. A failed allocation throws std::bad_alloc and leaves
    // the cache as it was. window: the layer's sliding window, if any.
    void allocate(const LayerDims &dims, CacheType type, int num_blocks, int block_size, std::optional<int> window);
    void release();
    bool allocated() const { return pool_.allocated(); }

    KvCache &pool() { return pool_; }
    const KvCache &pool() const { return pool_; }
    int block_size() const { return block_size_; }
    int num_blocks() const { return int(references_.size()); }
    int free_blocks() const { return int(free_.size()); }

    int add_sequence();
    // A new sequence holding the same tokens, sharing every block with `from`.
    int fork(int from);
    // Keeps the first `length` tokens of `sequence`, at least min_length of them.
    void truncate(int sequence, int length);
    int min_length(int sequence) const;
    void remove(int sequence);
    const Sequence &sequence(int id) const;
    std::vector<int> sequence_ids() const;

    // Checks the rows (known sequences, each at most once, tokens >= 1) and reserves
    // the blocks they write, copying each shared block a row writes into (the host
    // copy of the pool, pulled from `kernels` first). Throws Error, reserving
    // nothing, when the pool has too few free blocks.
    Step reserve(const std::vector<Row> &rows, Kernels &kernels);
    void cancel(Step &step);
    // The rows' tokens become part of their sequences at `positions` (the step's
    // tokens in row order); a windowed layer's sequences then let go of the blocks
    // no later query sees.
    void commit(Step &step, const std::vector<int32_t> &positions);

    // The pool slot of slot `slot` of a row of `step` (its table after the step).
    int32_t pool_slot(const std::vector<int32_t> &table, int slot) const;
    // The granule table of a row: `granules` entries, each granule's offset from its
    // key slots to their pool slots; for a granule the row holds no block for (past
    // its end, or let go of: never visible), pool slot 0 onwards.
    void granule_table(const std::vector<int32_t> &table, int granules, int32_t *out) const;

private:
    Sequence &find(int id);
    // Takes the blocks of the step's rows from the free list, into step.taken as it goes.
    void take_blocks(Step &step);
    // Whether the next token of `s` goes into a block another sequence holds too.
    bool writes_shared_block(const Sequence &s) const;
    void let_go(int32_t block);

    KvCache pool_;
    int block_size_ = 0;
    std::optional<int> window_;
    std::vector<int32_t> references_;  // per pool block: the sequences holding it
    std::vector<int32_t> free_;        // pool blocks no sequence holds
    std::map<int, Sequence> sequences_;
    int next_id_ = 0;
};

}  // namespace gqa::detail
