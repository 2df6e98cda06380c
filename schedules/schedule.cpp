#include "schedule.h"

namespace gqa::schedules {

using namespace Halide;

namespace {

void require_x86(const Target &target) {
    require(target.arch == Target::X86 && !target.has_gpu_feature(),
            "no schedule for target " + target.to_string() + " yet");
}

}  // namespace

void schedule_project(algo::Project &p, const Target &target, const Knobs &knobs) {
    require_x86(target);
    x86::schedule_project(p, target, knobs);
}

void schedule_attend(algo::Attend &a, const Target &target, const Knobs &knobs) {
    require_x86(target);
    x86::schedule_attend(a, target, knobs);
}

void schedule_output(algo::Linear &l, Func out, const Target &target, const Knobs &knobs) {
    require_x86(target);
    x86::schedule_output(l, out, target, knobs);
}

void schedule_rope(Func out, const Target &target, const Knobs &knobs) {
    require_x86(target);
    x86::schedule_rope(out, target, knobs);
}

}  // namespace gqa::schedules
