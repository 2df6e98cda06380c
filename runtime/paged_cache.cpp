#include "paged_cache.h"

#include <algorithm>
#include <set>

#include "layout.h"
#include "validation.h"

namespace gqa::detail {

void PagedCache::allocate(const LayerDims &dims, CacheType type, int num_blocks, int block_size,
                          std::optional<int> window) {
    PagedCache fresh;
    fresh.pool_.allocate(dims, type, 1, num_blocks * block_size);
    fresh.block_size_ = block_size;
    fresh.window_ = window;
    fresh.references_.assign(num_blocks, 0);
    fresh.free_.resize(num_blocks);
    // Handed out from the back: the lowest blocks first.
    for (int p = 0; p < num_blocks; ++p) fresh.free_[p] = num_blocks - 1 - p;
    *this = std::move(fresh);
}

void PagedCache::release() {
    *this = PagedCache();
}

int PagedCache::add_sequence() {
    sequences_.emplace(next_id_, Sequence());
    return next_id_++;
}

int PagedCache::fork(int from) {
    Sequence copy = find(from);
    sequences_.emplace(next_id_, copy);
    for (int32_t block : copy.blocks) {
        if (block >= 0) ++references_[block];
    }
    return next_id_++;
}

void PagedCache::truncate(int id, int length) {
    Sequence &s = find(id);
    if (length < 0 || length > s.length()) {
        fail("sequence ", id, " holds ", s.length(), " tokens; cannot truncate it to ", length);
    }
    if (length < min_length(id)) {
        fail("sequence ", id, " let go of its first ", s.released_blocks * block_size_, " slots (sliding window ",
             *window_, "): it can be truncated to no fewer than ", min_length(id), " tokens, not ", length);
    }
    const int kept_blocks = (length + block_size_ - 1) / block_size_;
    for (size_t j = kept_blocks; j < s.blocks.size(); ++j) {
        if (s.blocks[j] >= 0) let_go(s.blocks[j]);
    }
    s.blocks.resize(std::max(kept_blocks, 0));
    s.released_blocks = std::min(s.released_blocks, kept_blocks);
    s.positions.resize(length);
}

int PagedCache::min_length(int id) const {
    const Sequence &s = sequence(id);
    // A query at slot `length` sees slots (length - window, length]: they must be held.
    return s.released_blocks > 0 ? s.released_blocks * block_size_ + *window_ - 1 : 0;
}

void PagedCache::remove(int id) {
    Sequence &s = find(id);
    for (int32_t block : s.blocks) {
        if (block >= 0) let_go(block);
    }
    sequences_.erase(id);
}

const PagedCache::Sequence &PagedCache::sequence(int id) const {
    return const_cast<PagedCache *>(this)->find(id);
}

std::vector<int> PagedCache::sequence_ids() const {
    std::vector<int> ids;
    for (const auto &entry : sequences_) ids.push_back(entry.first);
    return ids;
}

PagedCache::Sequence &PagedCache::find(int id) {
    const auto it = sequences_.find(id);
    if (it == sequences_.end()) fail("no sequence ", id, " in the paged KV cache");
    return it->second;
}

bool PagedCache::writes_shared_block(const Sequence &s) const {
    return s.length() % block_size_ != 0 && references_[s.blocks[s.length() / block_size_]] > 1;
}

void PagedCache::let_go(int32_t block) {
    if (--references_[block] == 0) free_.push_back(block);
}

PagedCache::Step PagedCache::reserve(const std::vector<Row> &rows, Kernels &kernels) {
    Step step;
    step.rows = rows;
    std::set<int> seen;
    // Blocks each row needs: new ones past its last, and a copy of a shared block it
    // writes into (its last, partly filled).
    int64_t needed = 0;
    bool copies = false;
    for (const Row &row : rows) {
        const Sequence &s = find(row.sequence);
        if (row.tokens < 1) fail("sequence ", row.sequence, " is given ", row.tokens, " tokens; expected >= 1");
        if (!seen.insert(row.sequence).second) fail("sequence ", row.sequence, " appears twice in one forward");
        const int64_t end = int64_t(s.length()) + row.tokens;
        needed += (end + block_size_ - 1) / block_size_ - int64_t(s.blocks.size());
        // So that commit() cannot fail.
        find(row.sequence).positions.reserve(size_t(end));
        if (writes_shared_block(s)) ++needed, copies = true;
    }
    if (needed > free_blocks()) {
        fail("the paged KV cache's pool is exhausted: the forward needs ", needed, " new blocks of ", block_size_,
             " slots and ", free_blocks(), " of its ", num_blocks(), " are free");
    }
    // Nothing can fail from here on but the pull from the device before the copies,
    // which changes nothing either.
    if (copies) pool_.pull(kernels);
    try {
        take_blocks(step);
    } catch (...) {
        cancel(step);
        throw;
    }
    return step;
}

void PagedCache::take_blocks(Step &step) {
    const int head_slots = block_size_;
    for (const Row &row : step.rows) {
        const Sequence &s = find(row.sequence);
        std::vector<int32_t> table = s.blocks;
        const int end = s.length() + row.tokens;
        const int last = s.length() / block_size_;
        if (writes_shared_block(s)) {
            step.taken.push_back(free_.back());
            free_.pop_back();
            const int32_t copy = step.taken.back();
            pool_.copy_slots(table[last] * head_slots, copy * head_slots, head_slots);
            step.replaced.push_back(table[last]);
            table[last] = copy;
        }
        while (int64_t(table.size()) * block_size_ < end) {
            step.taken.push_back(free_.back());
            free_.pop_back();
            table.push_back(step.taken.back());
        }
        step.tables.push_back(std::move(table));
    }
}

void PagedCache::cancel(Step &step) {
    for (auto it = step.taken.rbegin(); it != step.taken.rend(); ++it) free_.push_back(*it);
    step = Step();
}

void PagedCache::commit(Step &step, const std::vector<int32_t> &positions) {
    for (int32_t block : step.taken) references_[block] = 1;
    for (int32_t block : step.replaced) let_go(block);
    size_t token = 0;
    for (size_t r = 0; r < step.rows.size(); ++r) {
        Sequence &s = find(step.rows[r].sequence);
        s.blocks = std::move(step.tables[r]);
        s.positions.insert(s.positions.end(), positions.begin() + token, positions.begin() + token + step.rows[r].tokens);
        token += step.rows[r].tokens;
        if (!window_) continue;
        // No later query (slot >= length) sees slot length - window or any before it;
        // a block more is kept, so that a rollback of up to block_size tokens (from
        // here) can always be made.
        while (s.released_blocks < int(s.blocks.size()) &&
               (s.released_blocks + 2) * block_size_ <= s.length() - *window_ + 1) {
            let_go(s.blocks[s.released_blocks]);
            s.blocks[s.released_blocks++] = -1;
        }
    }
    step = Step();
}

int32_t PagedCache::pool_slot(const std::vector<int32_t> &table, int slot) const {
    return table[slot / block_size_] * block_size_ + slot % block_size_;
}

void PagedCache::granule_table(const std::vector<int32_t> &table, int granules, int32_t *out) const {
    for (int j = 0; j < granules; ++j) {
        const int slot = j * layout::kCacheGranule, block = slot / block_size_;
        out[j] = (block < int(table.size()) && table[block] >= 0 ? pool_slot(table, slot) : 0) - slot;
    }
}

}  // namespace gqa::detail
