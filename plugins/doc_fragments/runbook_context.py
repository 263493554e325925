# -*- coding: utf-8 -*-
# Copyright: governed.rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    # Mirrors RUNBOOK_CONTEXT in plugins/module_utils/_argspec.py.
    DOCUMENTATION = r"""
options:
  actor:
    description: Who requested the rollback; recorded on what is changed (annotation, audit row or request).
    type: str
  incident_id:
    description: Incident or ticket id; recorded with O(actor).
    type: str
  reason:
    description: Why the rollback is needed; recorded with O(actor) (shortened where the target limits its length).
    type: str
"""
