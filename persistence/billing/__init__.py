"""Bill payments (诊间支付): which payment order pays which HIS bill, and how its settlement went."""
