"""What an IBSD run adds to BasicSR's training state, and resuming it exactly.

Checkpoints hold the student only. The training state also holds the estimators, the sampled-CLUB
random stream, the snapshot teacher, the gradient shares and every rank's random streams (and the
position sampler's), so that a resumed run continues as the uninterrupted one would.
"""
from __future__ import annotations

from basicsr.utils import get_root_logger

from ibsd.training.checkpoints import write_training_state
from ibsd.training.random_streams import gather_random_states, pick_random_states, set_random_states


class IBSDStateMixin:
    """Methods of :class:`~ibsd.models.ibsd_model.IBSDModel` that save and restore its training state."""

    def training_extras(self) -> dict:
        extras = {}
        if self.net_est is not None:
            extras['net_est'] = self.get_bare_model(self.net_est).state_dict()
            extras['mi_generator'] = self.cri_mi.generator.get_state()
        if self.soft_target is not None:
            extras['soft_target'] = self.soft_target.state_dict()
        if self.gradient_shares:
            extras['gradient_shares'] = {name: share.state_dict() for name, share in self.gradient_shares.items()}
        return extras

    def save_training_state(self, epoch, current_iter):
        """BasicSR's training state plus IBSD's extras (``'ibsd'``), written by rank 0.

        Every rank calls this (as BasicSR's loop does): the random states of all ranks are
        gathered, so that each rank resumes its own streams. A state saved on the last iteration
        of an epoch records the next epoch, so that resuming starts there instead of replaying the
        finished epoch (BasicSR restarts the saved epoch).
        """
        if current_iter == -1:
            return
        own = {'positions': self.position_sampler.state_dict()} if self._samples_positions else None
        random_streams = gather_random_states(self.opt, own)  # a collective: every rank takes part
        if self.opt.get('rank', 0) != 0:
            return
        extras = {**self.training_extras(), 'random': random_streams}
        write_training_state(self, epoch, current_iter, {'ibsd': extras})  # atomic; a failed write raises

    def resume_training(self, resume_state):
        super().resume_training(resume_state)
        extras = resume_state.get('ibsd') or {}
        if self.net_est is not None and 'net_est' in extras:
            self.get_bare_model(self.net_est).load_state_dict(extras['net_est'])
            self.cri_mi.generator.set_state(extras['mi_generator'].cpu())  # states load onto the GPU when there is one
        if self.soft_target is not None and 'soft_target' in extras:
            self.soft_target.load_state_dict(extras['soft_target'])
        for name, state in (extras.get('gradient_shares') or {}).items():
            if name in self.gradient_shares:
                self.gradient_shares[name].load_state_dict(state)
        states = pick_random_states(extras['random'], self.opt.get('rank', 0)) if 'random' in extras else None
        if states is not None:
            set_random_states(states)
            if self._samples_positions and 'positions' in states:
                saved = states['positions']
                if float(saved.get('fraction', self.position_sampler.fraction)) != self.position_sampler.fraction:
                    get_root_logger().info(f"train:ibsd:positions is {self.position_sampler.fraction:g}; the resumed "
                                           f"state was trained with {saved['fraction']:g}")
                self.position_sampler.load_state_dict(saved)

    @property
    def _samples_positions(self) -> bool:
        sampler = getattr(self, 'position_sampler', None)
        return sampler is not None and not sampler.exact
