// For tests only: a failure injected after a stage of the next forward on this
// thread, as if that stage's pipeline had failed once its work was done, so tests
// can check that a failed forward leaves the layer as it was.
#pragma once

namespace gqa::detail {

enum class ForwardStage { none, project, attend, output };

void fail_next_forward_after(ForwardStage stage);

}  // namespace gqa::detail
