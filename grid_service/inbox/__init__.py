"""The inbox (待办提醒): notifications to the people who must act, written when a change is published."""
