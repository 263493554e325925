# -*- coding: utf-8 -*-
# Copyright: governed.rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Runs governed.rollback.pg_data_loss in the controller's task worker when that is the same as a module process."""

from __future__ import annotations

from ansible_collections.governed.rollback.plugins.plugin_utils._in_process import InProcessModuleAction, preload

preload(__name__)


class ActionModule(InProcessModuleAction):
    """See plugins/plugin_utils/_in_process.py."""
